// Command selinux_boolean switches an SELinux boolean for the running system.
package main

import (
	"context"
	_ "embed"
	"strconv"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/selinux"
)

//go:embed params.schema.json
var declaration []byte

func onOff(b bool) string { return map[bool]string{true: "on", false: "off"}[b] }

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	fs, name, value := p.String("selinuxfs"), p.String("name"), p.Bool("value")
	if err := selinux.Enabled(fs); err != nil {
		return err
	}
	before, err := selinux.Boolean(fs, name)
	if err != nil {
		return err
	}
	r.Set("before", before)
	r.Set("already", before == value)
	if before == value {
		r.Logf("%s is %s already", name, onOff(value))
		return nil
	}
	if err := selinux.SetBoolean(fs, name, value); err != nil {
		return err
	}
	r.Changed(kit.Change{Action: "selinux_boolean", Path: name, Before: map[string]any{"value": before}, After: map[string]any{"value": value},
		Detail: map[string]any{"undo": [][]string{{"setsebool", name, strconv.Itoa(map[bool]int{true: 1}[before])}}}})
	r.Logf("%s: %s -> %s", name, onOff(before), onOff(value))
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
