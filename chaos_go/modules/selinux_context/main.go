// Command selinux_context gives a file the wrong SELinux type, as chcon -t does.
package main

import (
	"context"
	_ "embed"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/selinux"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	if err := selinux.Enabled(p.String("selinuxfs")); err != nil {
		return err
	}
	before, err := selinux.Context(path)
	if err != nil {
		return err
	}
	after, err := selinux.WithType(before, p.String("type"))
	if err != nil {
		return err
	}
	r.Set("before", before)
	r.Set("after", after)
	if after == before {
		r.Logf("%s has type %s already", path, p.String("type"))
		return nil
	}
	if err := selinux.SetContext(path, after); err != nil {
		return err
	}
	r.Changed(kit.Change{Action: "set_xattr", Path: path, Before: map[string]any{"context": before}, After: map[string]any{"context": after},
		Detail: map[string]any{"attr": selinux.Attr, "undo": [][]string{{"chcon", "-h", before, path}}}})
	r.Logf("%s: %s -> %s", path, before, after)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
