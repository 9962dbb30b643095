// Command spawner is a test module for the kit: it spawns a fault process that reports in
// and waits to be killed.
package main

import (
	"context"
	"fmt"
	"os"

	"chaosrun/chaos_go/kit"
)

var declaration = []byte(`{
  "title": "spawner", "description": "Spawn a process that waits to be killed.", "x-kind": "chaos", "x-rank": 99,
  "type": "object",
  "properties": {
    "process_name": {"type": "string", "description": "argv[0] of the process."},
    "ready": {"type": "string", "description": "File the process writes its pid to."}
  },
  "required": ["process_name", "ready"],
  "additionalProperties": false
}`)

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	pid, err := kit.Spawn(ctx, p.String("process_name"), map[string]any{"ready": p.String("ready")})
	if err != nil {
		return err
	}
	r.Set("pid", pid)
	r.Logf("spawned %d", pid)
	return nil
}

func background(ctx context.Context, args map[string]any) error {
	ready, _ := args["ready"].(string)
	if err := os.WriteFile(ready, []byte(fmt.Sprint(os.Getpid())), 0o600); err != nil {
		return err
	}
	<-ctx.Done()
	return os.WriteFile(ready+".stopped", nil, 0o600)
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run, Background: background}) }
