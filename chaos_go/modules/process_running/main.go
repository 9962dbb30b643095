// Command process_running counts the live processes with a name.
package main

import (
	"context"
	_ "embed"
	"os"
	"sort"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/procfs"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	name, procDir := p.String("name"), p.String("proc_dir")
	procs, err := procfs.List(procDir)
	if err != nil {
		return err
	}
	pids := []int{}
	for _, proc := range procs {
		// A zombie has exited; only its parent has not reaped it yet.
		if proc.PID != os.Getpid() && !proc.Exited() && proc.HasName(name) {
			pids = append(pids, proc.PID)
		}
	}
	sort.Ints(pids)
	r.Set("running", len(pids) > 0)
	r.Set("count", len(pids))
	r.Set("pids", pids)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
