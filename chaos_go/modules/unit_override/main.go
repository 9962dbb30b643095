// Command unit_override breaks a systemd service with a drop-in, as `systemctl edit`
// writes one, and reloads systemd so the next start reads it.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
)

//go:embed params.schema.json
var declaration []byte

// unitFile is the unit's full name: a name without a type is a service, as systemctl takes it.
func unitFile(service string) string {
	if i := strings.LastIndexByte(service, '.'); i > 0 {
		switch service[i+1:] {
		case "service", "socket", "timer", "mount", "path", "target", "slice", "scope", "automount", "swap", "device":
			return service
		}
	}
	return service + ".service"
}

// dropIn is the content of the drop-in for fault, value being the fault's value or "".
func dropIn(fault, value, settings, unit string) (string, error) {
	base := strings.TrimSuffix(unit, filepath.Ext(unit))
	base, _, _ = strings.Cut(base, "@")
	switch fault {
	case "bad_exec":
		if value == "" {
			value = "/usr/sbin/" + base + "-daemon"
		}
		// The empty ExecStart= clears the unit's own; a second one alone would be refused.
		return "[Service]\nExecStart=\nExecStart=" + value + "\n", nil
	case "missing_dependency":
		if value == "" {
			value = base + "-backend.service"
		}
		if !systemd.IsUnitName(value) {
			return "", fmt.Errorf("value %q is not a unit name", value)
		}
		return "[Unit]\nRequires=" + value + "\nAfter=" + value + "\n", nil
	case "nofile":
		if value == "" {
			value = "16"
		}
		return "[Service]\nLimitNOFILE=" + value + "\n", nil
	default:
		if strings.TrimSpace(settings) == "" {
			return "", errors.New("fault settings needs settings: the drop-in's text")
		}
		if !strings.HasSuffix(settings, "\n") {
			settings += "\n"
		}
		return settings, nil
	}
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	service := p.String("service")
	if !systemd.IsUnitName(service) {
		return fmt.Errorf("service %q is not a unit name", service)
	}
	unit := unitFile(service)
	content, err := dropIn(p.String("fault"), p.String("value"), p.String("settings"), unit)
	if err != nil {
		return err
	}
	systemctl, err := sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if err != nil {
		return err
	}
	path := filepath.Join(p.String("unit_dir"), unit+".d", p.String("name"))
	before, err := kit.ReadFileState(path)
	if err != nil {
		return err
	}
	want := kit.FileState{Exists: true, Content: []byte(content), Mode: 0o644}
	r.Set("path", path)
	r.Set("content", content)
	r.Set("existed", before.Exists)
	if !before.Same(want) {
		if err := kit.WriteRecorded(r, path, before, want, true, map[string]any{
			// After a restore puts the unit back: systemd reads it again, and a service that
			// runs is restarted with it (a stopped one is the restart_service undo's to start).
			"then": [][]string{{systemctl, "daemon-reload"}, {systemctl, "try-restart", service}},
		}); err != nil {
			return err
		}
		r.Logf("wrote %s: %s", path, strings.ReplaceAll(strings.TrimSpace(content), "\n", "; "))
	} else {
		r.Logf("%s already says this", path)
	}
	if _, stderr, err := sysexec.Run(ctx, []string{systemctl, "daemon-reload"}, ""); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w: %s", err, sysexec.OneLine(stderr))
	}
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
