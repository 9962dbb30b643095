// Command chmod changes the permission bits of a file or directory.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	mode, err := strconv.ParseUint(p.String("mode"), 8, 32)
	if err != nil || mode > 07777 {
		return fmt.Errorf("mode %q: want octal 000-7777", p.String("mode"))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	before := st.Mode & 07777
	// syscall.Chmod takes the raw bits, setuid/setgid/sticky included (os.Chmod remaps them).
	if err := syscall.Chmod(path, uint32(mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := syscall.Stat(path, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	after := st.Mode & 07777
	r.Set("before", octal(before))
	r.Set("after", octal(after))
	r.Changed(kit.Change{Action: "chmod", Path: path, Before: octal(before), After: octal(after)})
	r.Logf("chmod %s: %s -> %s", path, octal(before), octal(after))
	return nil
}

func octal(mode uint32) string { return fmt.Sprintf("%04o", mode) }

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
