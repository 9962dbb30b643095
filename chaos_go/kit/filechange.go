package kit

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// MaxRecorded is the largest old content a file change record carries, so a restore can
// put it back byte for byte.
const MaxRecorded = 256 << 10

// FileState is a regular file's content, mode and owner, or the fact that there is none.
type FileState struct {
	Exists   bool
	Content  []byte
	Mode     uint32 // permission bits with setuid, setgid and sticky, as in stat(2)
	UID, GID int
}

// ReadFileState reads the file at path (a symlink is followed). A missing file is a
// FileState with Exists false; anything but a regular file, or one larger than
// MaxRecorded, is an error naming it.
func ReadFileState(path string) (FileState, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return FileState{}, nil
		}
		return FileState{}, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return FileState{}, fmt.Errorf("%s is not a regular file", path)
	}
	if st.Size > MaxRecorded {
		return FileState{}, fmt.Errorf("%s has %d bytes: its old content is kept for restore, which takes files up to %d", path, st.Size, MaxRecorded)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return FileState{}, fmt.Errorf("read %s: %w", path, err)
	}
	return FileState{Exists: true, Content: data, Mode: st.Mode & 07777, UID: int(st.Uid), GID: int(st.Gid)}, nil
}

// Same says whether two states are the same file: both missing, or equal content, mode
// and owner.
func (s FileState) Same(o FileState) bool {
	if !s.Exists || !o.Exists {
		return s.Exists == o.Exists
	}
	return string(s.Content) == string(o.Content) && s.Mode == o.Mode && s.UID == o.UID && s.GID == o.GID
}

// Digest is the SHA-256 of the content, in hex.
func (s FileState) Digest() string { d := sha256.Sum256(s.Content); return hex.EncodeToString(d[:]) }

// Record is the state as a change record's before or after: digest, mode and owner, and
// with content true the content itself (base64), which is what a restore writes back.
func (s FileState) Record(content bool) map[string]any {
	if !s.Exists {
		return map[string]any{"exists": false}
	}
	out := map[string]any{"sha256": s.Digest(), "mode": fmt.Sprintf("%04o", s.Mode), "uid": s.UID, "gid": s.GID}
	if content {
		out["content_base64"] = base64.StdEncoding.EncodeToString(s.Content)
	}
	return out
}

// WriteFileState makes the file at path be want (Exists true): atomically, as
// WriteFileAtomic does, then owner and mode (setuid, setgid and sticky included). With
// makeDirs, missing parent folders are created (0755) and returned, outermost first.
func WriteFileState(path string, want FileState, makeDirs bool) (made []string, err error) {
	if makeDirs {
		if made, err = MakeDirs(filepath.Dir(path)); err != nil {
			return nil, err
		}
	}
	if err := WriteFileAtomic(path, want.Content, fs.FileMode(want.Mode&0o777)); err != nil {
		return made, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chown(path, want.UID, want.GID); err != nil {
		return made, fmt.Errorf("chown %s: %w", path, err)
	}
	if err := syscall.Chmod(path, want.Mode); err != nil {
		return made, fmt.Errorf("chmod %s: %w", path, err)
	}
	return made, nil
}

// WriteRecorded makes the file at path be want, as WriteFileState does, and records the
// write in r (action "write_file", the old content with it, so a restore can put the file
// back exactly, or remove it when there was none; detail's keys added). A write that fails
// half-way is recorded too when it left anything changed: a restore must see it.
func WriteRecorded(r *Report, path string, before, want FileState, makeDirs bool, detail map[string]any) error {
	made, err := WriteFileState(path, want, makeDirs)
	if now, _ := ReadFileState(path); err == nil || !now.Same(before) || len(made) > 0 {
		d := map[string]any{"made_dirs": made}
		for k, v := range detail {
			d[k] = v
		}
		r.Changed(Change{Action: "write_file", Path: path, Before: before.Record(true), After: want.Record(false), Detail: d})
	}
	return err
}

// MakeDirs creates dir and its missing parents (0755), and returns the ones it made,
// outermost first.
func MakeDirs(dir string) ([]string, error) {
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
