// Command command runs a shell command and reports its exit status and output.
package main

import (
	"context"
	_ "embed"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/shell"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	timeout := time.Duration(p.Int("timeout_ms")) * time.Millisecond
	res, err := shell.Run(ctx, "", p.String("command"), timeout, int(p.Int("max_output")))
	if err != nil {
		return err
	}
	r.Set("exit_status", res.ExitStatus)
	r.Set("stdout", res.Stdout)
	r.Set("stderr", res.Stderr)
	r.Set("timed_out", res.TimedOut)
	r.Set("truncated", res.Truncated)
	r.Set("signal", res.Signal)
	r.Set("duration_ms", float64(res.Duration.Microseconds())/1000)
	return ctx.Err()
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
