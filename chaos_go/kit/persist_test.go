package kit

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
)

// runUndo runs a LineEdit's undo commands with the system's rm, rmdir, truncate and sed.
func runUndo(t *testing.T, e *LineEdit) {
	t.Helper()
	for _, argv := range e.UndoArgv() {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("undo %q: %v: %s", argv, err, out)
		}
	}
}

func TestPlanLinesAppendsInsertsAndCreatesAndTheUndoIsExact(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, before string
		at           int
		want         string
		edit         string
		first        int
		undo0        string
	}{
		{"append", "a\nb\n", -1, "a\nb\nX\nY\n", "append", 3, "truncate"},
		{"append without a final newline", "a\nb", -1, "a\nb\nX\nY\n", "append", 3, "truncate"},
		{"append to an empty file", "", -1, "X\nY\n", "append", 1, "truncate"},
		{"insert in the middle", "a\nb\nc\n", 1, "a\nX\nY\nb\nc\n", "insert", 2, "sed"},
		{"insert at the top", "a\nb", 0, "X\nY\na\nb", "insert", 1, "sed"},
		{"an index past the end appends", "a\n", 7, "a\nX\nY\n", "append", 2, "truncate"},
	}
	for i, c := range cases {
		path := filepath.Join(dir, "f"+string(rune('0'+i)))
		if err := os.WriteFile(path, []byte(c.before), 0o640); err != nil {
			t.Fatal(err)
		}
		e, err := PlanLines(path, c.at, []string{"X", "Y"}, 0o600)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if b, _ := os.ReadFile(path); string(b) != c.before {
			t.Fatalf("%s: PlanLines wrote the file", c.name)
		}
		if err := e.Apply(); err != nil {
			t.Fatalf("%s: Apply: %v", c.name, err)
		}
		b, _ := os.ReadFile(path)
		st, _ := os.Stat(path)
		if string(b) != c.want || st.Mode().Perm() != 0o640 {
			t.Errorf("%s: file = %q mode %v; want %q mode 0640 (kept)", c.name, b, st.Mode().Perm(), c.want)
		}
		ch := e.Change()
		if ch.Action != "edit_file" || ch.Before != c.before || ch.Detail["edit"] != c.edit ||
			!reflect.DeepEqual(ch.Detail["line_numbers"], []int{c.first, c.first + 1}) ||
			!reflect.DeepEqual(ch.Detail["lines_added"], []string{"X", "Y"}) {
			t.Errorf("%s: change = %+v", c.name, ch)
		}
		if undo := ch.Detail["undo"].([][]string); undo[0][0] != c.undo0 {
			t.Errorf("%s: undo = %q; want %s", c.name, undo, c.undo0)
		}
		runUndo(t, e)
		if b, _ := os.ReadFile(path); string(b) != c.before {
			t.Errorf("%s: after undo the file is %q; want %q", c.name, b, c.before)
		}
	}
}

func TestPlanLinesCreatesTheFileAndItsParentsAndRevertRemovesThem(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "new.conf")
	e, err := PlanLines(path, -1, []string{"k = v"}, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b")}
	if !reflect.DeepEqual(e.Dirs, want) || e.Existed {
		t.Fatalf("plan = %+v; want dirs %q", e, want)
	}
	if err := e.Apply(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "k = v\n" {
		t.Errorf("new file = %q", b)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v; want 0644", st.Mode().Perm())
	}
	ch := e.Change()
	wantUndo := [][]string{{"rm", "-f", path}, {"rmdir", want[1]}, {"rmdir", want[0]}}
	if ch.Action != "create_file" || ch.After != "k = v\n" || !reflect.DeepEqual(ch.Detail["undo"], wantUndo) ||
		!reflect.DeepEqual(ch.Detail["created_dirs"], want) {
		t.Errorf("change = %+v", ch)
	}
	if err := e.Revert(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Errorf("Revert left %s: %v", filepath.Join(root, "a"), err)
	}
	if err := e.Apply(); err != nil {
		t.Fatal(err)
	}
	runUndo(t, e)
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("after undo %s holds %v", root, entries)
	}
}

func TestPlanLinesEditsASymlinksTargetAndRevertRestoresIt(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "sysctl.conf")
	link := filepath.Join(dir, "99-sysctl.conf")
	if err := os.WriteFile(target, []byte("#x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sysctl.conf", link); err != nil {
		t.Fatal(err)
	}
	e, err := PlanLines(link, 0, []string{"k = 1"}, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if e.Path != target || e.Link != link {
		t.Fatalf("path, link = %q, %q; want the target and the link", e.Path, e.Link)
	}
	if err := e.Apply(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the symlink was replaced by a file")
	}
	if b, _ := os.ReadFile(target); string(b) != "k = 1\n#x\n" {
		t.Errorf("target = %q", b)
	}
	runUndo(t, e) // sed -i on the target, not the link
	if b, _ := os.ReadFile(target); string(b) != "#x\n" {
		t.Errorf("target after undo = %q", b)
	}
	if err := e.Apply(); err != nil {
		t.Fatal(err)
	}
	if err := e.Revert(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "#x\n" {
		t.Errorf("target after Revert = %q", b)
	}
}
