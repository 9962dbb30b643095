// Command stop_service stops, disables or masks a systemd service.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"regexp"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
)

//go:embed params.schema.json
var declaration []byte

// unitName repeats the declaration's pattern: a name that could pass for an
// option (a leading "-") must never reach systemctl's argv.
var unitName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9@._:\\-]*$`)

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

// unitState asks systemctl is-active or is-enabled. Those exit non-zero for
// states such as "inactive" or "disabled", so the answer is what they print;
// "unknown" with systemctl's message when they print nothing.
func unitState(ctx context.Context, systemctl, query, service string) (state, reason string) {
	stdout, stderr, _ := sysexec.Run(ctx, []string{systemctl, query, service}, "")
	if line, _, _ := strings.Cut(strings.TrimSpace(stdout), "\n"); line != "" {
		return line, ""
	}
	return "unknown", firstLine(stderr)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service, action := p.String("service"), p.String("action")
	if !unitName.MatchString(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		return err
	}
	wasActive, why := unitState(ctx, systemctl, "is-active", service)
	if why != "" {
		r.Warnf("is-active %s before: %s", service, why)
	}
	wasEnabled, _ := unitState(ctx, systemctl, "is-enabled", service)

	argv := actionArgv(systemctl, action, service)
	if _, stderr, err := sysexec.Run(ctx, argv, ""); err != nil {
		return fmt.Errorf("systemctl %s: %w: %s", strings.Join(argv[1:], " "), err, oneLine(stderr))
	}
	active, _ := unitState(ctx, systemctl, "is-active", service)
	enabled, _ := unitState(ctx, systemctl, "is-enabled", service)
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

// oneLine joins a tool's message lines with "; " so an error stays one line.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(strings.TrimSpace(s), func(r rune) bool { return r == '\n' }), "; ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}

func main() {
	kit.Main(kit.Module{Name: "stop_service", Kind: kit.Chaos, Declaration: declaration, Run: run})
}
