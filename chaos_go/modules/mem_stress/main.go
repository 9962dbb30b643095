// Command mem_stress starts a detached process that fills memory and holds it for a while.
package main

import (
	"bufio"
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// maxDuration repeats the declaration's bound, so the fault process ends even
// if its arguments were altered on the way.
const maxDuration = 3600 * time.Second

// startTimeout bounds the wait for the fault process to show its name;
// fillTimeout bounds the wait for its resident size to reach the target.
const (
	startTimeout = 3 * time.Second
	fillTimeout  = 10 * time.Second
)

// touchChunk is how much the fault process touches between checks of ctx.
const touchChunk = 64 << 20

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	sizeMB := p.Int("size_mb")
	duration := time.Duration(p.Int("duration")) * time.Second
	name := p.String("process_name")

	mem, err := readMeminfo("/proc/meminfo")
	if err != nil {
		return err
	}
	if total := mem["MemTotal"] >> 10; sizeMB > total {
		return fmt.Errorf("size_mb %d is more than this machine's %d MB of memory", sizeMB, total)
	}
	if avail, ok := mem["MemAvailable"]; ok && sizeMB > avail>>10 {
		r.Warnf("size_mb %d is more than the %d MB available: expect swapping or the OOM killer", sizeMB, avail>>10)
	}

	fault, err := kit.StartOnce(ctx, r, "memory process", name,
		map[string]any{"size_mb": sizeMB, "duration_s": int64(duration / time.Second)}, duration, startTimeout)
	if err != nil {
		return err
	}
	pid, start, until := fault.PID, fault.Start, fault.Until
	r.Changed(kit.Change{
		Action: "spawn_process",
		After:  map[string]any{"pid": pid, "process_name": name, "start_ticks": start, "until": until.Unix()},
		Detail: map[string]any{"kind": "mem_stress", "size_mb": sizeMB, "undo": [][]string{{"kill", "-TERM", strconv.Itoa(pid)}}},
	})
	r.Set("pid", pid)
	r.Set("until", float64(until.UnixMilli())/1000)

	rss, err := waitResident(ctx, pid, sizeMB)
	r.Set("rss_mb", rss)
	if err != nil {
		return err
	}
	if rss < sizeMB*9/10 {
		r.Warnf("process %d holds %d MB after %s; still filling toward %d MB", pid, rss, fillTimeout, sizeMB)
	}
	r.Logf("memory process %d (%s) holds %d MB until %s", pid, name, rss, until.Format(time.RFC3339))
	return nil
}

// waitResident polls pid's VmRSS until it reaches sizeMB (the process's own
// few MB of runtime make up for pages not yet touched), fillTimeout passes or
// ctx is a second from its end, and returns the last value seen. The process
// going away meanwhile is an error.
func waitResident(ctx context.Context, pid int, sizeMB int64) (int64, error) {
	deadline := time.Now().Add(fillTimeout)
	if d, ok := ctx.Deadline(); ok && d.Add(-time.Second).Before(deadline) {
		deadline = d.Add(-time.Second)
	}
	status := filepath.Join("/proc", strconv.Itoa(pid), "status")
	var rss int64
	for {
		fields, err := readMeminfo(status)
		if err != nil || fields["VmRSS"] == 0 && fields["VmSize"] == 0 {
			return rss, fmt.Errorf("memory process %d exited while filling (%d MB resident last seen)", pid, rss)
		}
		rss = fields["VmRSS"] >> 10
		if rss >= sizeMB || time.Now().After(deadline) {
			return rss, nil
		}
		select {
		case <-ctx.Done():
			return rss, nil
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// background is the fault process: map size_mb of anonymous memory outside the
// Go heap, write one byte per page so every page is really resident, hold it.
func background(ctx context.Context, args map[string]any) error {
	sizeMB, duration := kit.ArgInt(args, "size_mb"), time.Duration(kit.ArgInt(args, "duration_s"))*time.Second
	if sizeMB < 1 || duration <= 0 {
		return fmt.Errorf("bad arguments %v", args)
	}
	duration = min(duration, maxDuration)
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	mem, err := syscall.Mmap(-1, 0, int(sizeMB<<20), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("map %d MB: %w", sizeMB, err)
	}
	defer syscall.Munmap(mem)
	page := os.Getpagesize()
	for off := 0; off < len(mem); off += touchChunk {
		if ctx.Err() != nil {
			return nil
		}
		end := min(off+touchChunk, len(mem))
		for i := off; i < end; i += page {
			mem[i] = 0xa5
		}
	}
	<-ctx.Done()
	return nil
}

// readMeminfo parses "Key:   123 kB" lines (/proc/meminfo, /proc/PID/status)
// into kB values; lines without a number are skipped.
func readMeminfo(path string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
			out[key] = n
		}
	}
	return out, sc.Err()
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run, Background: background}) }
