// Command sysctl reads a kernel parameter's value now and at the next boot.
package main

import (
	"context"
	_ "embed"
	"os"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysctlconf"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	key := p.String("key")
	path, err := sysctlconf.KeyPath(p.String("proc_sys"), key)
	if err != nil {
		return err
	}
	r.Set("exists", false)
	r.Set("value", "")
	r.Set("reason", "")
	if raw, err := os.ReadFile(path); err != nil {
		r.Set("reason", err.Error())
	} else {
		r.Set("exists", true)
		r.Set("value", sysctlconf.Normalize(string(raw)))
	}
	boot, file, err := sysctlconf.BootValue(p.String("root"), key)
	if err != nil {
		return err
	}
	r.Set("boot_value", boot)
	r.Set("boot_file", file)
	now, _ := r.Result()["value"].(string)
	r.Set("persisted", file != "" && boot == now)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
