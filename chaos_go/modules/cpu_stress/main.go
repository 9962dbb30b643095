// Command cpu_stress starts a detached process that keeps CPUs busy for a while.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"runtime"
	"strconv"
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
	fault, err := kit.StartOnce(ctx, r, "load process", name,
		map[string]any{"workers": workers, "duration_s": int64(duration / time.Second)}, duration, startTimeout)
	if err != nil {
		return err
	}
	pid, start, until := fault.PID, fault.Start, fault.Until
	if !fault.Again {
		r.Logf("load process %d (%s) runs %d workers for %s", pid, name, workers, duration)
	}
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
	workers, duration := kit.ArgInt(args, "workers"), time.Duration(kit.ArgInt(args, "duration_s"))*time.Second
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

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run, Background: background}) }
