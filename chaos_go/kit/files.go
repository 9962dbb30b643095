package kit

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic replaces the file at path with data, the way an editor would: a hidden
// temporary file in the same directory, fsync'd, then renamed over the original, so a reader
// never sees half a file. A symlink is followed (the target is replaced, the link stays).
// An existing file keeps its mode and owner; a new one gets perm. When path cannot be
// renamed over -- a bind-mounted file such as a container's /etc/hosts or /etc/resolv.conf --
// the file is rewritten in place instead.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	target, err := filepath.EvalSymlinks(path)
	switch {
	case err == nil:
	case errors.Is(err, os.ErrNotExist):
		target = path
	default:
		return fmt.Errorf("resolve %s: %w", path, err)
	}
	mode, uid, gid := uint32(perm.Perm()), -1, -1
	var st syscall.Stat_t
	if err := syscall.Stat(target, &st); err == nil {
		mode, uid, gid = st.Mode&07777, int(st.Uid), int(st.Gid)
	}
	tmp, err := createHidden(filepath.Dir(target), filepath.Base(target))
	if err != nil {
		return err
	}
	name := tmp.Name()
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if uid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", name, err)
		}
	}
	// After the chown, which clears setuid/setgid bits.
	if err := syscall.Fchmod(int(tmp.Fd()), mode); err != nil {
		return fmt.Errorf("chmod %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", name, err)
	}
	err = os.Rename(name, target)
	if errors.Is(err, syscall.EBUSY) || errors.Is(err, syscall.EXDEV) {
		os.Remove(name)
		committed = true
		return writeInPlace(target, data)
	}
	if err != nil {
		return fmt.Errorf("rename %s: %w", target, err)
	}
	committed = true
	if d, err := os.Open(filepath.Dir(target)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// writeInPlace truncates and rewrites path, keeping its inode.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

// createHidden creates a new file ".<base>.<random>" in dir, mode 0600.
func createHidden(dir, base string) (*os.File, error) {
	for i := 0; i < 10; i++ {
		name := filepath.Join(dir, HiddenName(base))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("create temp file in %s: %w", dir, err)
		}
		return f, nil
	}
	return nil, fmt.Errorf("create temp file in %s: too many collisions", dir)
}

// HiddenName returns "." + base + "." + 6 random hex digits: a dot file beside base, looking
// like an editor's leftover.
func HiddenName(base string) string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return "." + base + "." + hex.EncodeToString(b[:])
}
