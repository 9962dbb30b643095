// Command file_exists checks whether a path exists and what it is.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// absent says whether a stat error means "there is nothing there" rather
// than "could not look".
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	link, lerr := os.Lstat(path)
	if lerr != nil && !absent(lerr) {
		return fmt.Errorf("look at %s: %w", path, lerr)
	}
	isLink := lerr == nil && link.Mode()&fs.ModeSymlink != 0
	st, err := os.Stat(path)
	if err != nil && !absent(err) {
		return fmt.Errorf("look at %s: %w", path, err)
	}
	exists := err == nil
	kind, size := "none", int64(0)
	switch {
	case exists && st.IsDir():
		kind, size = "dir", st.Size()
	case exists && st.Mode().IsRegular():
		kind, size = "file", st.Size()
	case exists:
		kind = "other"
	case isLink:
		kind = "symlink"
	}
	r.Set("exists", exists)
	r.Set("is_dir", exists && st.IsDir())
	r.Set("size", size)
	r.Set("type", kind)
	r.Set("is_symlink", isLink)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
