// Command immutable_file sets (or clears) the immutable or append-only attribute of a file,
// as chattr +i / +a does, through the FS_IOC_GETFLAGS / FS_IOC_SETFLAGS ioctls.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	bit := int32(kit.FlagImmutable)
	if p.String("flag") == "a" {
		bit = kit.FlagAppend
	}
	// O_NONBLOCK as chattr does, so a FIFO or device does not block the open.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	before, err := kit.FileFlags(fd)
	if err != nil {
		return fmt.Errorf("get flags of %s: %w", path, err)
	}
	want := before | bit
	if p.Bool("remove") {
		want = before &^ bit
	}
	if want != before {
		if err := kit.SetFileFlags(fd, want); err != nil {
			return fmt.Errorf("set flags of %s: %w", path, err)
		}
	}
	after, err := kit.FileFlags(fd)
	if err != nil {
		return fmt.Errorf("get flags of %s: %w", path, err)
	}
	r.Set("before", letters(before))
	r.Set("after", letters(after))
	r.Changed(kit.Change{Action: "chattr", Path: path, Before: letters(before), After: letters(after),
		Detail: map[string]any{"flags_before": before, "flags_after": after}})
	r.Logf("chattr %s: %q -> %q", path, letters(before), letters(after))
	return nil
}

// letters shows the two attributes this module handles, in lsattr's order ("a" before "i").
func letters(flags int32) string {
	s := ""
	if flags&kit.FlagAppend != 0 {
		s += "a"
	}
	if flags&kit.FlagImmutable != 0 {
		s += "i"
	}
	return s
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
