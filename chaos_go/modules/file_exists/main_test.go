package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func probe(t *testing.T, path string) map[string]any {
	t.Helper()
	r := moduletest.MustRun(t, declaration, run, map[string]any{"path": path})
	if len(r.Changes()) != 0 {
		t.Errorf("a probe recorded changes: %+v", r.Changes())
	}
	return r.Result()
}

func TestFileExistsDescribesWhatIsThere(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nginx.conf")
	os.WriteFile(file, []byte("worker_processes 1;\n"), 0o644)
	os.Symlink(file, filepath.Join(dir, "link"))
	os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "dangling"))
	syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600)

	cases := []struct {
		path              string
		exists, dir, link bool
		size              int64
		kind              string
	}{
		{file, true, false, false, 20, "file"},
		{dir, true, true, false, -1, "dir"},
		{filepath.Join(dir, "link"), true, false, true, 20, "file"},
		{filepath.Join(dir, "dangling"), false, false, true, 0, "symlink"},
		{filepath.Join(dir, "fifo"), true, false, false, 0, "other"},
		{filepath.Join(dir, "missing"), false, false, false, 0, "none"},
		{filepath.Join(file, "under-a-file"), false, false, false, 0, "none"},
	}
	for _, c := range cases {
		res := probe(t, c.path)
		if res["exists"] != c.exists || res["is_dir"] != c.dir || res["is_symlink"] != c.link || res["type"] != c.kind {
			t.Errorf("%s: result %v; want exists=%v is_dir=%v is_symlink=%v type=%s", c.path, res, c.exists, c.dir, c.link, c.kind)
		}
		if c.size >= 0 && res["size"] != c.size {
			t.Errorf("%s: size %v; want %d", c.path, res["size"], c.size)
		}
	}
}
