// Command immutable_file sets (or clears) the immutable or append-only attribute of a file,
// as chattr +i / +a does, through the FS_IOC_GETFLAGS / FS_IOC_SETFLAGS ioctls.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"syscall"
	"unsafe"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// From linux/fs.h (the ioctl numbers encode sizeof(long); the kernel reads an int).
const (
	fsIocGetflags = 0x80086601
	fsIocSetflags = 0x40086602
	fsImmutableFl = 0x00000010
	fsAppendFl    = 0x00000020
)

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	bit := int32(fsImmutableFl)
	if p.String("flag") == "a" {
		bit = fsAppendFl
	}
	// O_NONBLOCK as chattr does, so a FIFO or device does not block the open.
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer syscall.Close(fd)
	before, err := getFlags(fd)
	if err != nil {
		return fmt.Errorf("get flags of %s: %w", path, err)
	}
	want := before | bit
	if p.Bool("remove") {
		want = before &^ bit
	}
	if want != before {
		if err := setFlags(fd, want); err != nil {
			return fmt.Errorf("set flags of %s: %w", path, err)
		}
	}
	after, err := getFlags(fd)
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

func getFlags(fd int) (int32, error) {
	var flags int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), fsIocGetflags, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return 0, errno
	}
	return flags, nil
}

func setFlags(fd int, flags int32) error {
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), fsIocSetflags, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return errno
	}
	return nil
}

// letters shows the two attributes this module handles, in lsattr's order ("a" before "i").
func letters(flags int32) string {
	s := ""
	if flags&fsAppendFl != 0 {
		s += "a"
	}
	if flags&fsImmutableFl != 0 {
		s += "i"
	}
	return s
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
