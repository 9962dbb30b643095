// Command run_command runs a shell command as chaos and records how to undo it.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/shell"
)

//go:embed params.schema.json
var declaration []byte

// stderrTail is how much of stderr a failure's message quotes.
const stderrTail = 300

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	command, undo := p.String("command"), p.String("undo")
	timeout := time.Duration(p.Int("timeout_ms")) * time.Millisecond
	res, err := shell.Run(ctx, "", command, timeout, int(p.Int("max_output")))
	if err != nil {
		return err
	}
	r.Set("exit_status", res.ExitStatus)
	r.Set("stdout", res.Stdout)
	r.Set("stderr", res.Stderr)
	r.Set("truncated", res.Truncated)
	r.Set("duration_ms", float64(res.Duration.Microseconds())/1000)
	if err := ctx.Err(); err != nil {
		return err
	}
	// Recorded whatever the outcome: a command that failed half-way may still have changed something.
	change := kit.Change{Action: "run_command", After: command, Detail: map[string]any{"exit_status": res.ExitStatus}}
	if undo != "" {
		change.Detail["undo"] = [][]string{{"/bin/sh", "-c", undo}}
	}
	r.Changed(change)
	r.Logf("ran %q: exit status %d in %s", command, res.ExitStatus, res.Duration.Round(time.Millisecond))
	switch {
	case res.TimedOut:
		return fmt.Errorf("command killed after %s (timeout_ms)%s", timeout, tail(res.Stderr))
	case res.Signal != "":
		return fmt.Errorf("command ended by signal %s%s", res.Signal, tail(res.Stderr))
	case res.ExitStatus != 0:
		return fmt.Errorf("command exited with status %d%s", res.ExitStatus, tail(res.Stderr))
	}
	return nil
}

// tail is ": " and the last stderrTail bytes of stderr's last lines, or "".
func tail(stderr string) string {
	s := strings.TrimSpace(stderr)
	if s == "" {
		return ""
	}
	if len(s) > stderrTail {
		s = "..." + s[len(s)-stderrTail:]
	}
	return ": " + strings.Join(strings.Fields(s), " ")
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
