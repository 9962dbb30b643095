// Command write_file writes a file's content, mode and owner, keeping the old ones for restore.
package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"strconv"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	before, err := kit.ReadFileState(path)
	if err != nil {
		return err
	}
	want := kit.FileState{Exists: true, Content: []byte(p.String("content")), Mode: 0o644, UID: os.Getuid(), GID: os.Getgid()}
	if before.Exists {
		want.Mode, want.UID, want.GID = before.Mode, before.UID, before.GID
	}
	if m := p.String("mode"); m != "" {
		n, _ := strconv.ParseUint(m, 8, 32) // the pattern allows octal digits only
		want.Mode = uint32(n)
	}
	if u := p.String("user"); u != "" {
		if want.UID, err = kit.ResolveID(u, p.String("passwd_file")); err != nil {
			return fmt.Errorf("user: %w", err)
		}
	}
	if g := p.String("group"); g != "" {
		if want.GID, err = kit.ResolveID(g, p.String("group_file")); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	already := before.Same(want)
	r.Set("existed", before.Exists)
	r.Set("already", already)
	r.Set("sha256", want.Digest())
	r.Set("mode", fmt.Sprintf("%04o", want.Mode))
	r.Set("uid", want.UID)
	r.Set("gid", want.GID)
	if already {
		r.Logf("%s already has this content, mode and owner: nothing to do", path)
		return nil
	}
	if err := kit.WriteRecorded(r, path, before, want, p.Bool("make_dirs"), nil); err != nil {
		return err
	}
	r.Logf("wrote %s: %d bytes, mode %04o, owner %d:%d", path, len(want.Content), want.Mode, want.UID, want.GID)
	return nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
