// Command file_mode reads a path's permission bits and ownership.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os/user"
	"strconv"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	var st syscall.Stat_t
	var err error
	if p.Bool("follow_symlinks") {
		err = syscall.Stat(path, &st)
	} else {
		err = syscall.Lstat(path, &st)
	}
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		r.Set("exists", false)
		r.Set("mode", "")
		r.Set("uid", -1)
		r.Set("gid", -1)
		r.Set("owner", "")
		r.Set("group", "")
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	uid, gid := strconv.FormatUint(uint64(st.Uid), 10), strconv.FormatUint(uint64(st.Gid), 10)
	owner, group := uid, gid
	if u, err := user.LookupId(uid); err == nil {
		owner = u.Username
	}
	if g, err := user.LookupGroupId(gid); err == nil {
		group = g.Name
	}
	r.Set("exists", true)
	r.Set("mode", fmt.Sprintf("%04o", st.Mode&0o7777))
	r.Set("uid", int64(st.Uid))
	r.Set("gid", int64(st.Gid))
	r.Set("owner", owner)
	r.Set("group", group)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
