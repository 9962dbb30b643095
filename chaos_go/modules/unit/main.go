// Command unit reads properties of a systemd unit with systemctl show.
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

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	unit := p.String("unit")
	if !systemd.IsUnitName(unit) {
		return fmt.Errorf("unit %q is not a unit name", unit)
	}
	asked := p.Strings("properties")
	props := map[string]any{}
	r.Set("properties", props)
	r.Set("active", false)
	r.Set("enabled", "")
	r.Set("loaded", false)
	r.Set("reason", "")
	systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		r.Set("reason", err.Error())
		return nil
	}
	argv := []string{systemctl, "show", "--no-pager"}
	if len(asked) > 0 {
		argv = append(argv, "--property="+strings.Join(asked, ","))
	}
	stdout, stderr, err := sysexec.Run(ctx, append(argv, "--", unit), "")
	if err != nil {
		r.Set("reason", "systemctl show: "+sysexec.OneLine(stderr+" "+err.Error()))
		return nil
	}
	wanted := map[string]bool{}
	for _, a := range asked {
		wanted[a] = true
	}
	for _, line := range strings.Split(stdout, "\n") {
		key, value, ok := strings.Cut(line, "=")
		if ok && (len(asked) == 0 || wanted[key]) {
			props[key] = value
		}
	}
	r.Set("active", props["ActiveState"] == "active")
	if state, ok := props["UnitFileState"].(string); ok {
		r.Set("enabled", state)
	}
	r.Set("loaded", props["LoadState"] == "loaded")
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
