// Command rogue_process starts a detached process under a chosen name that keeps writing
// to a file, holds a file open (optionally locked) or holds a port.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/procfs"
	"chaosrun/chaos_go/kit/sockets"
)

//go:embed params.schema.json
var declaration []byte

// startTimeout bounds the waits for the process to show its name and take hold.
const startTimeout = 3 * time.Second

const (
	kib = 1 << 10
	mib = 1 << 20
)

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	action, name := p.String("action"), p.String("process_name")
	args := map[string]any{"action": action, "duration_s": p.Int("duration")}
	if own, ok := inPlace(p, name); ok {
		r.AlreadyInPlace("process %d (%s) of an earlier attempt %s", own.PID, name, own.what)
		until := 0.0
		if at, known := procfs.StartedAt("/proc", own.Start); known && p.Int("duration") > 0 {
			until = float64(at.Add(time.Duration(p.Int("duration"))*time.Second).UnixMilli()) / 1000
		}
		r.Changed(kit.Change{
			Action: "spawn_process",
			After:  map[string]any{"pid": own.PID, "process_name": name, "start_ticks": own.Start, "until": until},
			Detail: map[string]any{"kind": "rogue_process", "action": action, "holds": own.holds, "undo": [][]string{{"kill", "-TERM", strconv.Itoa(own.PID)}}},
		})
		r.Set("pid", own.PID)
		r.Set("holds", own.holds)
		r.Set("until", until)
		return nil
	}
	var holds string
	created := false // the process creates the file it writes or holds
	switch action {
	case "write", "hold":
		if !p.Has("path") {
			return fmt.Errorf("action %s needs a path", action)
		}
		path := p.String("path")
		if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
			return fmt.Errorf("the folder of %s does not exist", path)
		}
		if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		args["path"], args["rate_kb"], args["max_mb"], args["lock"] = path, p.Int("rate_kb"), p.Int("max_mb"), p.Bool("lock")
		holds = path
		_, statErr := os.Stat(path)
		created = errors.Is(statErr, fs.ErrNotExist)
	case "listen":
		if !p.Has("port") {
			return errors.New("action listen needs a port")
		}
		ip, err := netip.ParseAddr(p.String("address"))
		if err != nil {
			return fmt.Errorf("address %q is not an IP address: %w", p.String("address"), err)
		}
		port, protocol := p.Int("port"), p.String("protocol")
		fd, err := sockets.Bind(protocol, ip, int(port))
		if err != nil {
			return fmt.Errorf("port %s/%s is not free: %w", netip.AddrPortFrom(ip, uint16(port)), protocol, err)
		}
		syscall.Close(fd)
		args["address"], args["port"], args["protocol"] = ip.String(), port, protocol
		holds = netip.AddrPortFrom(ip, uint16(port)).String() + "/" + protocol
	}

	pid, err := kit.Spawn(ctx, name, args)
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	// Recorded before the waits: should one fail, restore still knows what was started.
	after := map[string]any{"pid": pid, "process_name": name}
	change := kit.Change{
		Action: "spawn_process",
		After:  after,
		Detail: map[string]any{"kind": "rogue_process", "action": action, "holds": holds, "undo": [][]string{{"kill", "-TERM", strconv.Itoa(pid)}}},
	}
	start, err := procfs.WaitNamed(ctx, "/proc", pid, name, startTimeout)
	if err != nil {
		r.Changed(change)
		return fmt.Errorf("start %s: %w", name, err)
	}
	after["start_ticks"] = start
	if action == "listen" {
		err = sockets.WaitBound(ctx, "/proc", pid, p.String("protocol"), p.Int("port"), startTimeout)
	} else {
		_, err = procfs.WaitHolding(ctx, "/proc", pid, holds, startTimeout)
	}
	until := 0.0
	if d := p.Int("duration"); d > 0 {
		until = float64(time.Now().Add(time.Duration(d)*time.Second).UnixMilli()) / 1000
	}
	after["until"] = until
	r.Changed(change)
	if created {
		// Its content is the process's to change: restore removes it whatever it holds.
		r.Changed(kit.Change{Action: "create_file", Path: holds, Detail: map[string]any{"written_by": pid}})
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	r.Logf("process %d (%s) %s %s", pid, name, map[string]string{"write": "writes", "hold": "holds", "listen": "holds"}[action], holds)
	r.Set("pid", pid)
	r.Set("holds", holds)
	r.Set("until", until)
	return nil
}

// running is a fault process of an earlier attempt of this step, with what it holds.
type running struct {
	procfs.Process
	holds, what string
}

// inPlace finds the process an earlier attempt of this step started: this binary, under
// the step's name, holding the step's file or port.
func inPlace(p kit.Params, name string) (running, bool) {
	var holds string
	var has func(pid int) bool
	switch p.String("action") {
	case "write", "hold":
		if !p.Has("path") {
			return running{}, false
		}
		holds = p.String("path")
		has = func(pid int) bool { return procfs.Holds("/proc", pid, holds) }
	case "listen":
		ip, err := netip.ParseAddr(p.String("address"))
		if err != nil || !p.Has("port") {
			return running{}, false
		}
		port, protocol := p.Int("port"), p.String("protocol")
		holds = netip.AddrPortFrom(ip, uint16(port)).String() + "/" + protocol
		has = func(pid int) bool { return sockets.Owns("/proc", pid, protocol, port) }
	default:
		return running{}, false
	}
	own, ok := kit.OwnFaultProcess(name, has)
	return running{own, holds, "holds " + holds}, ok
}

// background is the detached process: it takes hold of its file or port, then misbehaves
// until its duration passes or SIGTERM ends ctx.
func background(ctx context.Context, args map[string]any) error {
	if d := time.Duration(kit.ArgInt(args, "duration_s")) * time.Second; d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	action, _ := args["action"].(string)
	if action == "listen" {
		address, _ := args["address"].(string)
		protocol, _ := args["protocol"].(string)
		ip, err := netip.ParseAddr(address)
		if err != nil {
			return err
		}
		fd, err := sockets.Bind(protocol, ip, int(kit.ArgInt(args, "port")))
		if err != nil {
			return err
		}
		sockets.TurnAway(fd, protocol)
		<-ctx.Done()
		return nil
	}
	path, _ := args["path"].(string)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if action == "hold" {
		if lock, _ := args["lock"].(bool); lock {
			if err := lockFile(f); err != nil {
				return err
			}
		}
		<-ctx.Done()
		return nil
	}
	return keepWriting(ctx, f, kit.ArgInt(args, "rate_kb")*kib, kit.ArgInt(args, "max_mb")*mib)
}

// lockFile takes both kinds of exclusive lock a program may test for: flock(2), as
// flock(1) and apt's frontend lock take it, and an fcntl record lock, as dpkg does.
func lockFile(f *os.File) error {
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk); err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return nil
}

// keepWriting appends log lines at rate bytes a second (in ten slices a second) until ctx
// ends; past limit bytes (0: no limit) or on a full disk it stops writing and goes on
// holding the file.
func keepWriting(ctx context.Context, f *os.File, rate, limit int64) error {
	const ticks = 10
	tick := time.NewTicker(time.Second / ticks)
	defer tick.Stop()
	size, _ := f.Seek(0, 2)
	var seq int64
	line := make([]byte, 0, 256)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if limit > 0 && size >= limit {
			continue
		}
		var chunk []byte
		for int64(len(chunk)) < rate/ticks {
			seq++
			line = logLine(line[:0], seq)
			chunk = append(chunk, line...)
		}
		if limit > 0 && size+int64(len(chunk)) > limit {
			chunk = chunk[:limit-size]
		}
		n, err := f.Write(chunk)
		size += int64(n)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			limit = size // the disk is full: hold on to what was written
		} else if err != nil {
			return err
		}
	}
}

// logLine appends one plausible debug log line, numbered seq.
func logLine(b []byte, seq int64) []byte {
	b = time.Now().UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z")
	b = append(b, " DEBUG worker[1]: request "...)
	b = strconv.AppendInt(b, seq, 10)
	return append(b, " handled: cache miss, retrying upstream connection pool refresh\n"...)
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run, Background: background}) }
