package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestMoveAsideKeepsTheFileUnderAHiddenName(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index.html")
	os.WriteFile(path, []byte("<h1>hi</h1>"), 0o640)
	r, err := moduletest.Run(t, declaration, run, map[string]any{"path": path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", path, err)
	}
	moved, _ := r.Result()["moved_to"].(string)
	if filepath.Dir(moved) != dir || !strings.HasPrefix(filepath.Base(moved), ".index.html.") {
		t.Errorf("moved_to: got %q; want a hidden name in %s", moved, dir)
	}
	if got, _ := os.ReadFile(moved); string(got) != "<h1>hi</h1>" {
		t.Errorf("moved content: got %q; want %q", got, "<h1>hi</h1>")
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Action != "move_file" || ch[0].After != moved || ch[0].Before.(map[string]any)["mode"] != "0640" {
		t.Errorf("changes: got %+v; want move_file to %s with mode 0640", ch, moved)
	}
}

func TestDeleteRemovesFilesSymlinksAndEmptyDirsOnly(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, []byte("x"), 0o644)
	link := filepath.Join(dir, "l")
	os.Symlink(file, link)
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	full := filepath.Join(dir, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)

	for path, typ := range map[string]string{link: "symlink", file: "file", empty: "directory"} {
		r, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "mode": "delete"})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s still exists", path)
		}
		if r.Result()["type"] != typ {
			t.Errorf("%s: type got %q; want %q", path, r.Result()["type"], typ)
		}
	}
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": full, "mode": "delete"}); err == nil {
		t.Errorf("non-empty directory: got no error; want one")
	}
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": "/", "mode": "delete"}); err == nil {
		t.Errorf("/: got no error; want a refusal")
	}
}
