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
	ch := r.Changes()
	if len(ch) != 2 || ch[0].Detail["in_progress"] != true || ch[0].Detail["limit"] != int64(500) {
		t.Fatalf("changes: got %+v; want the names it will make first, streamed before any file", ch)
	}
	if ch[1].Detail["created_dir"] != filepath.Join(base, "php") || ch[1].Detail["limit"] != int64(500) {
		t.Errorf("changes: got %+v; want created_dir %s, limit 500", ch[1], filepath.Join(base, "php"))
	}
}

func TestAppliedAgainItFinishesWhatAnEarlierAttemptStartedAndDoesNotDoubleIt(t *testing.T) {
	dir := t.TempDir()
	for i := int64(0); i < 120; i++ { // an attempt killed after 120 files
		os.WriteFile(filepath.Join(dir, name("sess_", i)), nil, 0o600)
	}
	r := moduletest.MustRun(t, declaration, run, map[string]any{"dir": dir, "count": 500})
	entries, _ := os.ReadDir(dir)
	if len(entries) != 500 || r.Result()["created"] != int64(380) || r.Result()["already_in_place"] != false {
		t.Errorf("got %d entries, result %v; want 500 in all, 380 made now", len(entries), r.Result())
	}
	again := moduletest.MustRun(t, declaration, run, map[string]any{"dir": dir, "count": 500})
	entries, _ = os.ReadDir(dir)
	if len(entries) != 500 || again.Result()["created"] != int64(0) || again.Result()["already_in_place"] != true {
		t.Errorf("again: got %d entries, result %v; want 500, already in place", len(entries), again.Result())
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
