// Command stop_service stops, disables or masks a systemd service.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
)

//go:embed params.schema.json
var declaration []byte

// actionArgv is the systemctl command for action. disable and mask carry
// --now so the unit also stops at once instead of at the next boot.
func actionArgv(systemctl, action, service string) []string {
	if action == "stop" {
		return []string{systemctl, "stop", service}
	}
	return []string{systemctl, action, "--now", service}
}

// undoArgvs are the commands that bring the unit back to its state before
// action, judged from what is-active and is-enabled said then.
func undoArgvs(systemctl, action, service, wasActive, wasEnabled string) [][]string {
	var undo [][]string
	if action == "mask" {
		undo = append(undo, []string{systemctl, "unmask", service})
	}
	if action != "stop" && wasEnabled == "enabled" {
		undo = append(undo, []string{systemctl, "enable", service})
	}
	if wasActive == "active" || wasActive == "activating" || wasActive == "reloading" {
		undo = append(undo, []string{systemctl, "start", service})
	}
	return undo
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
	wasActive, why := systemd.State(ctx, systemctl, "is-active", service)
	if why != "" {
		r.Warnf("is-active %s before: %s", service, why)
	}
	wasEnabled, _ := systemd.State(ctx, systemctl, "is-enabled", service)

	argv := actionArgv(systemctl, action, service)
	if _, stderr, err := sysexec.Run(ctx, argv, ""); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(argv[1:], " "), err, sysexec.OneLine(stderr))
	}
	active, _ := systemd.State(ctx, systemctl, "is-active", service)
	enabled, _ := systemd.State(ctx, systemctl, "is-enabled", service)
	r.Logf("systemctl %s: %s/%s -> %s/%s", strings.Join(argv[1:], " "), wasActive, wasEnabled, active, enabled)

	r.Set("service", service)
	r.Set("before_active", wasActive)
	r.Set("before_enabled", wasEnabled)
	r.Set("active", active)
	r.Set("enabled", enabled)
	r.Changed(kit.Change{
		Action: "systemctl_" + action,
		Path:   service,
		Before: map[string]any{"active": wasActive, "enabled": wasEnabled},
		After:  map[string]any{"active": active, "enabled": enabled},
		Detail: map[string]any{
			"argv": argv,
			"undo": undoArgvs(systemctl, action, service, wasActive, wasEnabled),
		},
	})
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
