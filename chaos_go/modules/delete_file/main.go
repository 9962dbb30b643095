// Command delete_file deletes a file, or moves it aside to a hidden name in the same
// directory so a rollback can restore it.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := filepath.Clean(p.String("path"))
	if path == "/" {
		return errors.New("refusing to remove /")
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return fmt.Errorf("lstat %s: %w", path, err)
	}
	before := map[string]any{"type": fileType(st.Mode), "mode": fmt.Sprintf("%04o", st.Mode&07777),
		"uid": st.Uid, "gid": st.Gid, "size": st.Size}
	if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
		if target, err := os.Readlink(path); err == nil {
			before["link_target"] = target
		}
	}
	if st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Size <= kit.MaxRecorded {
		// The content goes with the record, so a restore can put a deleted file back.
		if state, err := kit.ReadFileState(path); err == nil && state.Exists {
			before["sha256"] = state.Digest()
			before["content_base64"] = state.Record(true)["content_base64"]
		}
	}
	r.Set("type", fileType(st.Mode))
	r.Set("size", st.Size)
	switch p.String("mode") {
	case "move_aside":
		return moveAside(path, before, r)
	default:
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("remove %s: %w", path, err)
		}
		r.Changed(kit.Change{Action: "delete_file", Path: path, Before: before})
		r.Logf("deleted %s", path)
		return nil
	}
}

// moveAside renames path to a fresh hidden name in its directory, never replacing anything.
func moveAside(path string, before map[string]any, r *kit.Report) error {
	dir, base := filepath.Split(path)
	for i := 0; i < 10; i++ {
		hidden := filepath.Join(dir, kit.HiddenName(base))
		if _, err := os.Lstat(hidden); err == nil {
			continue
		}
		if err := os.Rename(path, hidden); err != nil {
			return fmt.Errorf("rename %s: %w", path, err)
		}
		r.Set("moved_to", hidden)
		r.Changed(kit.Change{Action: "move_file", Path: path, Before: before, After: hidden,
			Detail: map[string]any{"moved_to": hidden}})
		r.Logf("moved %s aside", path)
		return nil
	}
	return fmt.Errorf("move %s aside: no free hidden name", path)
}

func fileType(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFLNK:
		return "symlink"
	case syscall.S_IFDIR:
		return "directory"
	}
	return "other"
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
