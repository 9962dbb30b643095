// Command write_file writes a file's content, mode and owner, keeping the old ones for restore.
package main

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// maxBefore is the largest old content the change record carries.
const maxBefore = 256 << 10

type state struct {
	exists   bool
	content  []byte
	mode     uint32
	uid, gid int
}

func read(path string) (state, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return state{}, nil
		}
		return state{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return state{}, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size > maxBefore {
		return state{}, fmt.Errorf("%s has %d bytes: write_file keeps the old content for restore and takes files up to %d", path, st.Size, maxBefore)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return state{}, fmt.Errorf("read %s: %w", path, err)
	}
	return state{exists: true, content: data, mode: st.Mode & 07777, uid: int(st.Uid), gid: int(st.Gid)}, nil
}

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, content := p.String("path"), []byte(p.String("content"))
	before, err := read(path)
	if err != nil {
		return err
	}
	want := state{exists: true, content: content, mode: 0o644, uid: os.Getuid(), gid: os.Getgid()}
	if before.exists {
		want.mode, want.uid, want.gid = before.mode, before.uid, before.gid
	}
	if m := p.String("mode"); m != "" {
		n, _ := strconv.ParseUint(m, 8, 32) // the pattern allows octal digits only
		want.mode = uint32(n)
	}
	if u := p.String("user"); u != "" {
		if want.uid, err = kit.ResolveID(u, p.String("passwd_file")); err != nil {
			return fmt.Errorf("user: %w", err)
		}
	}
	if g := p.String("group"); g != "" {
		if want.gid, err = kit.ResolveID(g, p.String("group_file")); err != nil {
			return fmt.Errorf("group: %w", err)
		}
	}
	report := func(already bool) {
		r.Set("existed", before.exists)
		r.Set("already", already)
		r.Set("sha256", digest(content))
		r.Set("mode", fmt.Sprintf("%04o", want.mode))
		r.Set("uid", want.uid)
		r.Set("gid", want.gid)
	}
	if before.exists && string(before.content) == string(content) && before.mode == want.mode && before.uid == want.uid && before.gid == want.gid {
		r.Logf("%s already has this content, mode and owner: nothing to do", path)
		report(true)
		return nil
	}
	var made []string
	if p.Bool("make_dirs") {
		if made, err = makeDirs(filepath.Dir(path)); err != nil {
			return err
		}
	}
	if err := kit.WriteFileAtomic(path, content, fs.FileMode(want.mode)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chown(path, want.uid, want.gid); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	if err := os.Chmod(path, fs.FileMode(want.mode)|modeBits(want.mode)); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	change := kit.Change{
		Action: "write_file",
		Path:   path,
		After:  map[string]any{"sha256": digest(content), "mode": fmt.Sprintf("%04o", want.mode), "uid": want.uid, "gid": want.gid},
		Detail: map[string]any{"made_dirs": made},
	}
	if before.exists {
		change.Before = map[string]any{
			"sha256":         digest(before.content),
			"mode":           fmt.Sprintf("%04o", before.mode),
			"uid":            before.uid,
			"gid":            before.gid,
			"content_base64": base64.StdEncoding.EncodeToString(before.content),
		}
	} else {
		change.Before = map[string]any{"exists": false}
	}
	r.Changed(change)
	r.Logf("wrote %s: %d bytes, mode %04o, owner %d:%d", path, len(content), want.mode, want.uid, want.gid)
	report(false)
	return nil
}

// modeBits maps the setuid, setgid and sticky bits of an octal mode to fs.FileMode's.
func modeBits(m uint32) fs.FileMode {
	var out fs.FileMode
	if m&0o4000 != 0 {
		out |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		out |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		out |= fs.ModeSticky
	}
	return out
}

// makeDirs creates dir and its missing parents, and returns the ones it made, outermost first.
func makeDirs(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("stat %s: %w", d, err)
		}
		missing = append([]string{d}, missing...)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range missing {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("mkdir %s: %w", d, err)
		}
	}
	return missing, nil
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
