// Command restart_service restarts, starts or reloads a systemd service; a failure to come
// up is the fault it means to cause, and is reported rather than raised.
package main

import (
	"context"
	_ "embed"
	"fmt"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
)

//go:embed params.schema.json
var declaration []byte

// wasRunning says whether an is-active state is one that a stop would end.
func wasRunning(state string) bool {
	return state == "active" || state == "activating" || state == "reloading"
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service, action := p.String("service"), p.String("action")
	if !systemd.IsUnitName(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		return err
	}
	if p.Bool("daemon_reload") {
		if _, stderr, err := sysexec.Run(ctx, []string{systemctl, "daemon-reload"}, ""); err != nil {
			return fmt.Errorf("systemctl daemon-reload: %w: %s", err, sysexec.OneLine(stderr))
		}
	}
	wasActive, why := systemd.State(ctx, systemctl, "is-active", service)
	if why != "" {
		r.Warnf("is-active %s before: %s", service, why)
	}
	argv := []string{systemctl, action, service}
	_, stderr, runErr := sysexec.Run(ctx, argv, "")
	if ctx.Err() != nil {
		return fmt.Errorf("systemctl %s %s: %w", action, service, ctx.Err())
	}
	message := ""
	if runErr != nil {
		if message = sysexec.OneLine(stderr); message == "" {
			message = runErr.Error()
		}
	}
	active, _ := systemd.State(ctx, systemctl, "is-active", service)
	if runErr != nil {
		r.Logf("systemctl %s %s failed: %s (now %s)", action, service, message, active)
	} else {
		r.Logf("systemctl %s %s: %s -> %s", action, service, wasActive, active)
	}
	r.Set("service", service)
	r.Set("succeeded", runErr == nil)
	r.Set("message", message)
	r.Set("before_active", wasActive)
	r.Set("active", active)
	// A stopped service that this started is stopped again by a restore; one that ran
	// before runs again once its configuration is restored, which is the other steps' undo.
	var undo [][]string
	if !wasRunning(wasActive) && wasRunning(active) {
		undo = append(undo, []string{systemctl, "stop", service})
	}
	r.Changed(kit.Change{
		Action: "systemctl_" + action,
		Path:   service,
		Before: map[string]any{"active": wasActive},
		After:  map[string]any{"active": active, "succeeded": runErr == nil},
		Detail: map[string]any{"argv": argv, "undo": undo},
	})
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
