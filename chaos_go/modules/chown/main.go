// Command chown changes the owning user and/or group of a file or directory.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	if !p.Has("user") && !p.Has("group") {
		return errors.New("give user, group or both")
	}
	uid, gid := -1, -1 // -1 leaves that id unchanged
	var err error
	if p.Has("user") {
		if uid, err = kit.ResolveID(p.String("user"), p.String("passwd_file")); err != nil {
			return fmt.Errorf("user: %w", err)
		}
	}
	if p.Has("group") {
		if gid, err = kit.ResolveID(p.String("group"), p.String("group_file")); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	var before, after syscall.Stat_t
	if err := syscall.Stat(path, &before); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if err := syscall.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if err := syscall.Stat(path, &after); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	r.Set("uid_before", before.Uid)
	r.Set("gid_before", before.Gid)
	r.Set("uid_after", after.Uid)
	r.Set("gid_after", after.Gid)
	r.Changed(kit.Change{Action: "chown", Path: path,
		Before: map[string]any{"uid": before.Uid, "gid": before.Gid},
		// chown clears setuid/setgid on files: keep the old mode so a rollback can restore it.
		After:  map[string]any{"uid": after.Uid, "gid": after.Gid},
		Detail: map[string]any{"mode_before": fmt.Sprintf("%04o", before.Mode&07777)}})
	r.Logf("chown %s: %d:%d -> %d:%d", path, before.Uid, before.Gid, after.Uid, after.Gid)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
