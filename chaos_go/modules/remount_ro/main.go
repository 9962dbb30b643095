// Command remount_ro remounts a filesystem read-only.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/mounts"
	"chaosrun/chaos_go/kit/sysexec"
)

//go:embed params.schema.json
var declaration []byte

func mountAt(mountinfo, mountPoint string) (mounts.Mount, error) {
	ms, err := mounts.Read(mountinfo)
	if err != nil {
		return mounts.Mount{}, fmt.Errorf("read the mount table: %w", err)
	}
	m, ok := mounts.At(ms, mountPoint)
	if !ok {
		return m, fmt.Errorf("%s is not a mount point", mountPoint)
	}
	return m, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	mountPoint, mountinfo := filepath.Clean(p.String("mount_point")), p.String("mountinfo")
	before, err := mountAt(mountinfo, mountPoint)
	if err != nil {
		return err
	}
	r.Set("source", before.Source)
	r.Set("fstype", before.FSType)
	r.Set("before", strings.Join(before.MountOptions, ","))
	r.Set("already", before.ReadOnly())
	if before.ReadOnly() {
		r.Logf("%s is read-only already", mountPoint)
		return nil
	}
	mount, err := sysexec.LookTool("mount", p.String("mount_path"))
	if err != nil {
		return err
	}
	argv := []string{mount, "-o", "remount,ro", "--", mountPoint}
	if _, stderr, err := sysexec.Run(ctx, argv, ""); err != nil {
		return fmt.Errorf("mount -o remount,ro %s: %w: %s", mountPoint, err, sysexec.OneLine(stderr))
	}
	after, err := mountAt(mountinfo, mountPoint)
	if err != nil {
		return err
	}
	r.Changed(kit.Change{
		Action: "remount",
		Path:   mountPoint,
		Before: map[string]any{"options": strings.Join(before.MountOptions, ",")},
		After:  map[string]any{"options": strings.Join(after.MountOptions, ",")},
		Detail: map[string]any{"argv": argv, "undo": [][]string{{mount, "-o", "remount,rw", "--", mountPoint}}},
	})
	if !after.ReadOnly() {
		return fmt.Errorf("mount said it remounted %s read-only, yet it is %s", mountPoint, strings.Join(after.MountOptions, ","))
	}
	r.Logf("%s (%s %s) remounted read-only: %s -> %s", mountPoint, before.FSType, before.Source,
		strings.Join(before.MountOptions, ","), strings.Join(after.MountOptions, ","))
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
