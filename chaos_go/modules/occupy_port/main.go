// Command occupy_port starts a detached process that holds a port so the real service cannot bind it.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/procfs"
	"chaosrun/chaos_go/kit/sockets"
)

//go:embed params.schema.json
var declaration []byte

// startTimeout bounds the waits for the squatter to show its name and to bind.
const startTimeout = 3 * time.Second

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	port, protocol, name := p.Int("port"), p.String("protocol"), p.String("process_name")
	ip, err := netip.ParseAddr(p.String("address"))
	if err != nil {
		return fmt.Errorf("address %q is not an IP address: %w", p.String("address"), err)
	}
	addr := netip.AddrPortFrom(ip, uint16(port)).String()
	duration := time.Duration(p.Int("duration")) * time.Second

	if own, ok := kit.OwnFaultProcess(name, func(pid int) bool { return sockets.Owns("/proc", pid, protocol, port) }); ok {
		until := 0.0
		if at, known := procfs.StartedAt("/proc", own.Start); known && duration > 0 {
			until = float64(at.Add(duration).UnixMilli()) / 1000
		}
		r.AlreadyInPlace("process %d (%s) of an earlier attempt holds %s/%s", own.PID, name, addr, protocol)
		held(r, own.PID, own.Start, until, name, addr, protocol)
		return nil
	}
	// Try the port first: a clear "in use" beats a squatter that dies unseen.
	fd, err := sockets.Bind(protocol, ip, int(port))
	if err != nil {
		return fmt.Errorf("port %s/%s is not free: %w", addr, protocol, err)
	}
	syscall.Close(fd)

	pid, err := kit.Spawn(ctx, name, map[string]any{"protocol": protocol, "address": ip.String(), "port": port, "duration_s": int64(duration / time.Second)})
	if err != nil {
		return fmt.Errorf("start port holder: %w", err)
	}
	start, err := procfs.WaitNamed(ctx, "/proc", pid, name, startTimeout)
	if err != nil {
		return fmt.Errorf("start port holder: %w", err)
	}
	if err := sockets.WaitBound(ctx, "/proc", pid, protocol, port, startTimeout); err != nil {
		return fmt.Errorf("start port holder: %w", err)
	}
	until := 0.0
	if duration > 0 {
		until = float64(time.Now().Add(duration).UnixMilli()) / 1000
	}
	r.Logf("process %d (%s) holds %s/%s", pid, name, addr, protocol)
	held(r, pid, start, until, name, addr, protocol)
	return nil
}

// held reports the squatter pid holding addr: its result fields and its change record.
func held(r *kit.Report, pid int, start uint64, until float64, name, addr, protocol string) {
	r.Set("pid", pid)
	r.Set("address", addr)
	r.Set("until", until)
	r.Changed(kit.Change{
		Action: "spawn_process",
		After:  map[string]any{"pid": pid, "process_name": name, "start_ticks": start, "until": until},
		Detail: map[string]any{"kind": "occupy_port", "address": addr, "protocol": protocol, "undo": [][]string{{"kill", "-TERM", strconv.Itoa(pid)}}},
	})
}

// background is the port holder: bind, then turn every TCP client away (or
// drop every UDP datagram) until the duration passes or SIGTERM ends ctx;
// the socket closes as the process exits.
func background(ctx context.Context, args map[string]any) error {
	protocol, _ := args["protocol"].(string)
	address, _ := args["address"].(string)
	ip, err := netip.ParseAddr(address)
	if err != nil {
		return err
	}
	if duration := time.Duration(kit.ArgInt(args, "duration_s")) * time.Second; duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, duration)
		defer cancel()
	}
	fd, err := sockets.Bind(protocol, ip, int(kit.ArgInt(args, "port")))
	if err != nil {
		return err
	}
	sockets.TurnAway(fd, protocol)
	<-ctx.Done()
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run, Background: background}) }
