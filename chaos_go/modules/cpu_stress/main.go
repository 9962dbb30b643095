// Command cpu_stress starts a detached process that keeps CPUs busy for a while.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// maxDuration repeats the declaration's bound, so the fault process ends even
// if its arguments were altered on the way.
const maxDuration = 3600 * time.Second

// startTimeout bounds the wait for the fault process to show its name.
const startTimeout = 3 * time.Second

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	workers := p.Int("workers")
	if workers == 0 {
		workers = int64(runtime.NumCPU())
	}
	duration := time.Duration(p.Int("duration")) * time.Second
	name := p.String("process_name")
	until := time.Now().Add(duration)

	pid, err := kit.Spawn(ctx, name, map[string]any{"workers": workers, "duration_s": int64(duration / time.Second)})
	if err != nil {
		return fmt.Errorf("start load process: %w", err)
	}
	start, err := waitNamed(ctx, "/proc", pid, name)
	if err != nil {
		return fmt.Errorf("start load process: %w", err)
	}
	r.Logf("load process %d (%s) runs %d workers for %s", pid, name, workers, duration)
	r.Set("pid", pid)
	r.Set("workers", workers)
	r.Set("until", float64(until.UnixMilli())/1000)
	r.Changed(kit.Change{
		Action: "spawn_process",
		After:  map[string]any{"pid": pid, "process_name": name, "start_ticks": start, "until": until.Unix()},
		Detail: map[string]any{"kind": "cpu_stress", "undo": [][]string{{"kill", "-TERM", strconv.Itoa(pid)}}},
	})
	return nil
}

// background is the fault process: workers goroutines spinning until the
// duration passes or SIGTERM ends ctx.
func background(ctx context.Context, args map[string]any) error {
	workers, duration := argInt(args, "workers"), time.Duration(argInt(args, "duration_s"))*time.Second
	if workers < 1 || duration <= 0 {
		return fmt.Errorf("bad arguments %v", args)
	}
	duration = min(duration, maxDuration)
	if int(workers) > runtime.GOMAXPROCS(0) {
		runtime.GOMAXPROCS(int(workers))
	}
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	var wg sync.WaitGroup
	for i := int64(0); i < workers; i++ {
		wg.Add(1)
		go spin(ctx, &wg)
	}
	wg.Wait()
	return nil
}

// sink keeps the compiler from dropping spin's arithmetic.
var sink uint64

// spin is one busy worker: integer work in slices of about a millisecond,
// checking ctx between slices.
func spin(ctx context.Context, wg *sync.WaitGroup) {
	defer wg.Done()
	x := uint64(time.Now().UnixNano())
	done := ctx.Done()
	for {
		for i := 0; i < 1<<18; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		select {
		case <-done:
			sink += x
			return
		default:
		}
	}
}

// argInt reads an integer argument; Spawn's JSON hands numbers over as float64.
func argInt(args map[string]any, key string) int64 {
	switch v := args[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	}
	return 0
}

// waitNamed waits until process pid shows comm name (the fault process sets
// it first thing), and returns its start time in clock ticks after boot, which
// tells this process apart from a later one reusing the pid.
func waitNamed(ctx context.Context, procDir string, pid int, name string) (uint64, error) {
	want := name
	if len(want) > 15 {
		want = want[:15]
	}
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	deadline := time.Now().Add(startTimeout)
	for {
		stat, err := os.ReadFile(filepath.Join(dir, "stat"))
		if err != nil {
			return 0, fmt.Errorf("process %d exited at once", pid)
		}
		comm, rest := splitStat(string(stat))
		if len(rest) > 19 && rest[0] == "Z" {
			return 0, fmt.Errorf("process %d exited at once", pid)
		}
		if comm == want && len(rest) > 19 {
			return strconv.ParseUint(rest[19], 10, 64)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("process %d is still %q after %s; want %q", pid, comm, startTimeout, want)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// splitStat cuts /proc/PID/stat into comm and the fields after it (state first).
func splitStat(stat string) (comm string, rest []string) {
	open, end := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return "", nil
	}
	return stat[open+1 : end], strings.Fields(stat[end+1:])
}

var module = kit.Module{Name: "cpu_stress", Kind: kit.Chaos, Declaration: declaration, Run: run, Background: background}

func main() { kit.Main(module) }
