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
	start := time.Now()
	created, exhausted, err := create(ctx, dir, prefix, count, r)
	r.Set("created", created)
	r.Set("exhausted", exhausted)
	var st syscall.Statfs_t
	if serr := syscall.Statfs(dir, &st); serr == nil {
		r.Set("inodes_free", st.Ffree)
	}
	r.Changed(kit.Change{Action: "create_files", Path: dir, After: created, Detail: map[string]any{
		"prefix": prefix, "created": created, "first": name(prefix, 0), "last": name(prefix, max(created-1, 0)),
		"created_dir": createdDir,
	}})
	r.Logf("created %d files in %s in %v (exhausted: %v)", created, dir, time.Since(start).Round(time.Millisecond), exhausted)
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

// create makes up to count empty regular files with mknod(2) (one syscall, no descriptor),
// skipping names that exist, and stops at ENOSPC (no inode or no block for the directory).
func create(ctx context.Context, dir, prefix string, count int64, r *kit.Report) (created int64, exhausted bool, err error) {
	for i := int64(0); created < count; i++ {
		if i%1024 == 0 && ctx.Err() != nil {
			return created, false, ctx.Err()
		}
		err := syscall.Mknod(filepath.Join(dir, name(prefix, i)), syscall.S_IFREG|0o600, 0)
		switch {
		case err == nil:
			created++
			if created%progressEvery == 0 {
				r.Logf("%d files created", created)
			}
		case errors.Is(err, syscall.EEXIST):
			if i > count*2+1000 {
				return created, false, fmt.Errorf("too many existing names in %s", dir)
			}
		case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
			return created, true, nil
		default:
			return created, false, fmt.Errorf("mknod in %s: %w", dir, err)
		}
	}
	return created, false, nil
}

func name(prefix string, i int64) string {
	return prefix + fmt.Sprintf("%08s", strconv.FormatInt(i, 16))
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
