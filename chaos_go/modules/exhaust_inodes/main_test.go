package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestDeclarationBoundsTheCount(t *testing.T) {
	if _, err := kit.NewParams(declaration, map[string]any{"dir": "/x", "count": 5000001}); err == nil {
		t.Errorf("count above the bound: got no error; want one")
	}
}

func TestCreatesEmptyFilesInANewDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "php", "sessions")
	os.WriteFile(filepath.Join(base, "sentinel"), nil, 0o644)
	r := moduletest.MustRun(t, declaration, run, map[string]any{"dir": dir, "count": 500})
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 500 || r.Result()["created"] != int64(500) || r.Result()["exhausted"] != false {
		t.Errorf("got %d entries, result %v; want 500 created, not exhausted", len(entries), r.Result())
	}
	if fi, _ := entries[0].Info(); fi.Size() != 0 || !fi.Mode().IsRegular() || entries[0].Name() != "sess_00000000" {
		t.Errorf("first entry: got %s %v; want an empty regular sess_00000000", entries[0].Name(), fi)
	}
	if ch := r.Changes(); len(ch) != 1 || ch[0].Detail["created_dir"] != filepath.Join(base, "php") {
		t.Errorf("changes: got %+v; want created_dir %s", ch, filepath.Join(base, "php"))
	}
}

func TestStopsWhenInodesRunOut(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=200", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	r := moduletest.MustRun(t, declaration, run, map[string]any{"dir": dir, "count": 100000})
	created, _ := r.Result()["created"].(int64)
	if r.Result()["exhausted"] != true || created < 150 || created >= 200 || r.Result()["inodes_free"] != uint64(0) {
		t.Errorf("result: got %v; want exhausted after about 199 files, 0 inodes free", r.Result())
	}
}
