// Command restart_service restarts, starts or reloads a systemd service; a failure to come
// up is the fault it means to cause, and is reported rather than raised.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

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
	succeeded := runErr == nil
	if succeeded && (action == "restart" || action == "start") {
		// A simple service "starts" when systemd has forked it: a start command that is not
		// there, or that dies at once, fails a moment later. Watch it for that moment.
		active = settle(ctx, systemctl, service, active)
		if active == "failed" || active == "inactive" {
			succeeded = false
			message = fmt.Sprintf("%s is %s right after the %s (%s)", service, active, action, endReason(ctx, systemctl, service))
		}
	}
	if !succeeded {
		r.Logf("systemctl %s %s failed: %s (now %s)", action, service, message, active)
	} else {
		r.Logf("systemctl %s %s: %s -> %s", action, service, wasActive, active)
	}
	r.Set("service", service)
	r.Set("succeeded", succeeded)
	r.Set("message", message)
	r.Set("before_active", wasActive)
	r.Set("active", active)
	// A stopped service that this started is stopped again by a restore; one that ran
	// before and does not now is started again, once the other steps' undo has put its
	// configuration back (restore does units' states last).
	var undo [][]string
	switch {
	case !wasRunning(wasActive) && wasRunning(active):
		undo = append(undo, []string{systemctl, "stop", service})
	case wasRunning(wasActive) && !wasRunning(active):
		undo = append(undo, []string{systemctl, "start", service})
	}
	r.Changed(kit.Change{
		Action: "systemctl_" + action,
		Path:   service,
		Before: map[string]any{"active": wasActive},
		After:  map[string]any{"active": active, "succeeded": succeeded},
		Detail: map[string]any{"argv": argv, "undo": undo},
	})
	return nil
}

// settleTime is how long a started service is watched for failing at once.
const settleTime = 1500 * time.Millisecond

// settle polls is-active until the unit leaves activating/active for failed or inactive,
// or settleTime passes; it returns the last state.
func settle(ctx context.Context, systemctl, service, state string) string {
	deadline := time.Now().Add(settleTime)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return state
		case <-time.After(100 * time.Millisecond):
		}
		if state, _ = systemd.State(ctx, systemctl, "is-active", service); state == "failed" || state == "inactive" {
			return state
		}
	}
	return state
}

// endReason is systemd's account of the service's end: its Result and the main process's status.
func endReason(ctx context.Context, systemctl, service string) string {
	out, _, err := sysexec.Run(ctx, []string{systemctl, "show", "--property=Result,ExecMainCode,ExecMainStatus", "--", service}, "")
	if err != nil {
		return "systemctl show failed"
	}
	return strings.Join(strings.Fields(out), ", ")
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
