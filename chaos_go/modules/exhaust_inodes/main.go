// Command exhaust_inodes creates many empty files in a directory until the filesystem runs
// out of inodes.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// progressEvery is how often (in files) a progress line is logged.
const progressEvery = 500000

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	dir, count, prefix := p.String("dir"), p.Int("count"), p.String("prefix")
	createdDir, err := ensureDir(dir)
	if err != nil {
		return err
	}
	// Streamed before the first file: a run killed while this step creates them still
	// knows which names are its own (restore removes the first `limit` names).
	r.Changed(kit.Change{Action: "create_files", Path: dir, After: 0, Detail: map[string]any{
		"prefix": prefix, "limit": count, "created_dir": createdDir, "in_progress": true,
	}})
	start := time.Now()
	made, err := create(ctx, dir, prefix, count, r)
	r.Set("created", made.created)
	r.Set("exhausted", made.exhausted)
	r.Set("already_in_place", made.created == 0 && made.existing > 0 && err == nil)
	var st syscall.Statfs_t
	if serr := syscall.Statfs(dir, &st); serr == nil {
		r.Set("inodes_free", st.Ffree)
	}
	r.Changed(kit.Change{Action: "create_files", Path: dir, After: made.created, Detail: map[string]any{
		"prefix": prefix, "created": made.created, "existing": made.existing, "limit": made.scanned,
		"first": name(prefix, 0), "last": name(prefix, max(made.scanned-1, 0)), "created_dir": createdDir,
	}})
	if made.existing > 0 {
		what := fmt.Sprintf("%d of its files were there from an earlier attempt", made.existing)
		if made.created == 0 && err == nil {
			r.AlreadyInPlace("%s", what)
		} else {
			r.Logf("%s", what)
		}
	}
	r.Logf("created %d files in %s in %v (exhausted: %v)", made.created, dir, time.Since(start).Round(time.Millisecond), made.exhausted)
	return err
}

// ensureDir creates dir if needed, returning the topmost directory it created ("" if none),
// so a rollback can remove exactly that.
func ensureDir(dir string) (string, error) {
	top := ""
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("lstat %s: %w", d, err)
		}
		top = d
		if d == filepath.Dir(d) {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("mkdir %s: %w", dir, err)
	}
	return top, nil
}

// made is what create did.
type made struct {
	created, existing int64 // names made now, names that were there (an earlier attempt's)
	scanned           int64 // names 0..scanned-1 were tried
	exhausted         bool
}

// create makes the empty regular files named 0..count-1 with mknod(2) (one syscall, no
// descriptor); a name that exists counts as made (an earlier attempt of this step made it,
// so applying the step again does not double it). It stops at ENOSPC (no inode or no block
// for the directory).
func create(ctx context.Context, dir, prefix string, count int64, r *kit.Report) (m made, err error) {
	for ; m.scanned < count; m.scanned++ {
		if m.scanned%1024 == 0 && ctx.Err() != nil {
			return m, ctx.Err()
		}
		err := syscall.Mknod(filepath.Join(dir, name(prefix, m.scanned)), syscall.S_IFREG|0o600, 0)
		switch {
		case err == nil:
			m.created++
			if m.created%progressEvery == 0 {
				r.Logf("%d files created", m.created)
			}
		case errors.Is(err, syscall.EEXIST):
			m.existing++
		case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
			m.exhausted = true
			return m, nil
		default:
			return m, fmt.Errorf("mknod in %s: %w", dir, err)
		}
	}
	return m, nil
}

func name(prefix string, i int64) string {
	return prefix + fmt.Sprintf("%08s", strconv.FormatInt(i, 16))
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
