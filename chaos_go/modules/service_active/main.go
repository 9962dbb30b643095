// Command service_active asks systemd whether a service is running and enabled.
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

// query runs `systemctl VERB service`. is-active and is-enabled exit non-zero
// for "inactive" or "disabled", so the answer is the first line printed;
// "unknown" and systemctl's message when nothing is printed.
func query(ctx context.Context, systemctl, verb, service string) (state, reason string) {
	stdout, stderr, err := sysexec.Run(ctx, []string{systemctl, verb, service}, "")
	if line := firstLine(stdout); line != "" {
		return line, ""
	}
	reason = oneLine(stderr)
	if reason == "" && err != nil {
		reason = fmt.Sprintf("systemctl %s %s: %v", verb, service, err)
	}
	return "unknown", reason
}

// oneLine joins a tool's message lines with "; ".
func oneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service := p.String("service")
	if !unitName.MatchString(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	state, enabled, reason := "unknown", "unknown", ""
	if systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path")); err != nil {
		reason = err.Error()
	} else {
		state, reason = query(ctx, systemctl, "is-active", service)
		enabled, _ = query(ctx, systemctl, "is-enabled", service)
	}
	r.Set("active", state == "active")
	r.Set("state", state)
	r.Set("enabled", enabled)
	r.Set("reason", reason)
	return nil
}

func main() {
	kit.Main(kit.Module{Name: "service_active", Kind: kit.Probe, Declaration: declaration, Run: run})
}
