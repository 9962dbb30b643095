package kit

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFileAtomicKeepsModeOwnerAndSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "real.conf")
	if err := os.WriteFile(target, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(target, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(target, 1234, 4321); err != nil {
		t.Skipf("chown needs root: %v", err)
	}
	link := filepath.Join(dir, "link.conf")
	if err := os.Symlink("real.conf", link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, []byte("new\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "new\n" {
		t.Errorf("content: got %q; want %q", got, "new\n")
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the symlink was replaced: %v %v", fi, err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&07777 != 0o640 || st.Uid != 1234 || st.Gid != 4321 {
		t.Errorf("got mode %o uid %d gid %d; want 640 1234 4321", st.Mode&07777, st.Uid, st.Gid)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("got %d entries; want 2 (no temp file left)", len(entries))
	}
	fresh := filepath.Join(dir, "fresh")
	if err := WriteFileAtomic(fresh, []byte("x"), 0o604); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o604 {
		t.Errorf("new file mode: got %o; want 604", fi.Mode().Perm())
	}
}
