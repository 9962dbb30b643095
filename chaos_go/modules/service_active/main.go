// Command service_active asks systemd whether a service is running and enabled.
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

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service := p.String("service")
	if !systemd.IsUnitName(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	state, enabled, reason := "unknown", "unknown", ""
	if systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path")); err != nil {
		reason = err.Error()
	} else {
		state, reason = systemd.State(ctx, systemctl, "is-active", service)
		enabled, _ = systemd.State(ctx, systemctl, "is-enabled", service)
	}
	r.Set("active", state == "active")
	r.Set("state", state)
	r.Set("enabled", enabled)
	r.Set("reason", reason)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
