// Package systemd asks systemctl about units, for the modules that drive systemd
// (service_active, stop_service). It runs systemctl through kit/sysexec.
package systemd

import (
	"context"
	"fmt"
	"regexp"

	"chaosrun/chaos_go/kit/sysexec"
)

// unitName is the "service" pattern of the modules' declarations, checked again here so
// that a name that could pass for an option (a leading "-") never reaches systemctl's argv.
var unitName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9@._:\\-]*$`)

// IsUnitName reports whether name is a unit name (nginx, nginx.service, getty@tty1.service)
// that is safe on systemctl's argv: not empty, no leading "-", no blanks.
func IsUnitName(name string) bool { return unitName.MatchString(name) }

// State runs `systemctl VERB unit`, VERB being is-active or is-enabled, with systemctl the
// path sysexec.LookTool found. Those exit non-zero for states such as "inactive" or
// "disabled", so the state is the first line they print whatever their exit status. When
// they print nothing the state is "unknown" and reason says why: systemctl's message on
// one line, else the error running it.
func State(ctx context.Context, systemctl, verb, unit string) (state, reason string) {
	stdout, stderr, err := sysexec.Run(ctx, []string{systemctl, verb, unit}, "")
	if line := sysexec.FirstLine(stdout); line != "" {
		return line, ""
	}
	reason = sysexec.OneLine(stderr)
	if reason == "" && err != nil {
		reason = fmt.Sprintf("systemctl %s %s: %v", verb, unit, err)
	}
	return "unknown", reason
}
