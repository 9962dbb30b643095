package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// entries are change records as the monitor sends them back: JSON, with their step.
func entries(t *testing.T, changes ...kit.Change) []any {
	t.Helper()
	var out []any
	for i, c := range changes {
		text, err := json.Marshal(map[string]any{"step": "s", "index": i, "change": c})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(text))
	}
	return out
}

// restore runs the module on the records and returns each outcome's status, newest first.
func restore(t *testing.T, changes ...kit.Change) []string {
	t.Helper()
	r := moduletest.MustRun(t, declaration, run, map[string]any{"changes": entries(t, changes...)})
	var got []string
	for _, o := range r.Result()["outcomes"].([]map[string]any) {
		got = append(got, o["status"].(string)+": "+o["message"].(string))
	}
	return got
}

func status(outcomes []string) []string {
	out := make([]string, len(outcomes))
	for i, o := range outcomes {
		for j := range o {
			if o[j] == ':' {
				out[i] = o[:j]
				break
			}
		}
	}
	return out
}

func wantStatus(t *testing.T, got []string, want ...string) {
	t.Helper()
	s := status(got)
	if len(s) != len(want) {
		t.Fatalf("outcomes %q; want statuses %q", got, want)
	}
	for i := range want {
		if s[i] != want[i] {
			t.Fatalf("outcomes %q; want statuses %q", got, want)
		}
	}
}

func mode(t *testing.T, path string) uint32 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Mode & 07777
}

// changed records one change the way a module does (with the path's state after it).
func changed(c kit.Change) kit.Change {
	r := kit.NewTestReport()
	r.Changed(c)
	return r.Changes()[0]
}

func TestChmodIsUndoneOnceAndAChangedModeIsLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.html")
	os.WriteFile(path, []byte("hi\n"), 0o644)
	os.Chmod(path, 0)
	c := changed(kit.Change{Action: "chmod", Path: path, Before: "0644", After: "0000"})
	wantStatus(t, restore(t, c), restored)
	if m := mode(t, path); m != 0o644 {
		t.Fatalf("mode %04o; want 0644", m)
	}
	wantStatus(t, restore(t, c), already)
	os.Chmod(path, 0o600) // the candidate's own repair: not what the run left
	wantStatus(t, restore(t, c), changedSince)
	if m := mode(t, path); m != 0o600 {
		t.Fatalf("mode %04o; want the candidate's 0600 kept", m)
	}
}

func TestWriteRecordedIsUndoneToNoFileAndNoFolders(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "override.conf")
	r := kit.NewTestReport()
	if err := kit.WriteRecorded(r, path, kit.FileState{}, kit.FileState{Exists: true, Content: []byte("[Service]\n"), Mode: 0o644}, true, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, restore(t, r.Changes()...), restored)
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Fatalf("%s/a: %v; want it gone", root, err)
	}
	wantStatus(t, restore(t, r.Changes()...), already)
}

func TestWriteRecordedOverAFileIsUndoneToItsContentModeAndOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fstab")
	os.WriteFile(path, []byte("old\n"), 0o640)
	before, _ := kit.ReadFileState(path)
	r := kit.NewTestReport()
	if err := kit.WriteRecorded(r, path, before, kit.FileState{Exists: true, Content: []byte("new\n"), Mode: 0o600}, false, nil); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, restore(t, r.Changes()...), restored)
	now, _ := kit.ReadFileState(path)
	if !now.Same(before) {
		t.Fatalf("now %q %04o; want %q %04o", now.Content, now.Mode, before.Content, before.Mode)
	}
	os.WriteFile(path, []byte("repaired by hand\n"), 0o640)
	wantStatus(t, restore(t, r.Changes()...), changedSince)
}

func TestLineEditIsUndoneAndACreatedFileRemoved(t *testing.T) {
	dir := t.TempDir()
	edited := filepath.Join(dir, "nftables.conf")
	os.WriteFile(edited, []byte("flush ruleset\n"), 0o755)
	e, err := kit.PlanLines(edited, -1, []string{"add rule inet filter input tcp dport 80 drop"}, 0o644)
	if err != nil || e.Apply() != nil {
		t.Fatal(err)
	}
	created := filepath.Join(dir, "sysctl.d", "90-x.conf")
	n, err := kit.PlanLines(created, -1, []string{"net.ipv4.ip_forward = 0"}, 0o644)
	if err != nil || n.Apply() != nil {
		t.Fatal(err)
	}
	wantStatus(t, restore(t, changed(e.Change()), changed(n.Change())), restored, restored)
	if data, _ := os.ReadFile(edited); string(data) != "flush ruleset\n" {
		t.Fatalf("%s: %q; want the old content", edited, data)
	}
	if _, err := os.Stat(filepath.Join(dir, "sysctl.d")); !os.IsNotExist(err) {
		t.Fatalf("sysctl.d: %v; want it removed with its file", err)
	}
}

func TestDeletedFileIsWrittenBackAndAMovedOneRenamedBack(t *testing.T) {
	dir := t.TempDir()
	deleted := filepath.Join(dir, "app.conf")
	os.WriteFile(deleted, []byte("port=80\n"), 0o600)
	state, _ := kit.ReadFileState(deleted)
	before := map[string]any{"type": "file", "mode": "0600", "uid": state.UID, "gid": state.GID, "size": 8,
		"sha256": state.Digest(), "content_base64": state.Record(true)["content_base64"]}
	os.Remove(deleted)
	moved := filepath.Join(dir, "index.html")
	hidden := filepath.Join(dir, ".index.html.abc123")
	os.WriteFile(hidden, []byte("<h1>hi</h1>\n"), 0o644)
	got := restore(t,
		changed(kit.Change{Action: "delete_file", Path: deleted, Before: before}),
		changed(kit.Change{Action: "move_file", Path: moved, Before: map[string]any{"type": "file"}, After: hidden}))
	wantStatus(t, got, restored, restored)
	if now, _ := kit.ReadFileState(deleted); !now.Same(state) {
		t.Fatalf("%s not back as it was", deleted)
	}
	if data, err := os.ReadFile(moved); err != nil || string(data) != "<h1>hi</h1>\n" {
		t.Fatalf("%s: %q %v", moved, data, err)
	}
	if _, err := os.Lstat(hidden); !os.IsNotExist(err) {
		t.Fatalf("%s still there", hidden)
	}
}

func TestCreatedFilesAreRemovedByName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	os.Mkdir(dir, 0o755)
	for _, name := range []string{".x00000000", ".x00000001", ".x00000002"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "mine"), nil, 0o600)
	c := kit.Change{Action: "create_files", Path: dir, After: 3, Detail: map[string]any{"prefix": ".x", "created": 3, "created_dir": ""}}
	wantStatus(t, restore(t, c), restored)
	left, _ := os.ReadDir(dir)
	if len(left) != 1 || left[0].Name() != "mine" {
		t.Fatalf("left %v; want only the file that was there", left)
	}
	wantStatus(t, restore(t, c), already)
}

func TestFilesOfAStepKilledWhileCreatingThemAreRemovedByItsFirstRecord(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "new", "spool")
	os.MkdirAll(dir, 0o755)
	for _, name := range []string{"sess_00000000", "sess_00000001"} { // of limit 5, then killed
		os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	early := kit.Change{Action: "create_files", Path: dir, After: 0,
		Detail: map[string]any{"prefix": "sess_", "limit": 5, "created_dir": filepath.Join(base, "new"), "in_progress": true}}
	wantStatus(t, restore(t, early), restored)
	if _, err := os.Lstat(filepath.Join(base, "new")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the folder the step made: %v; want it gone", err)
	}
}

func TestAnEarlyRecordGivesWayToTheStepsFinalOneAndItsFolderToo(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "new")
	os.Mkdir(dir, 0o755)
	for _, name := range []string{"sess_00000000", "sess_00000001", "sess_00000002"} {
		os.WriteFile(filepath.Join(dir, name), nil, 0o600)
	}
	// killed after its early record; a resumed attempt found the folder and ended
	first := kit.Change{Action: "create_files", Path: dir, Detail: map[string]any{"prefix": "sess_", "limit": 3, "created_dir": dir, "in_progress": true}}
	again := kit.Change{Action: "create_files", Path: dir, Detail: map[string]any{"prefix": "sess_", "limit": 3, "created_dir": ""}}
	again2 := kit.Change{Action: "create_files", Path: dir, After: 3, Detail: map[string]any{"prefix": "sess_", "limit": 3, "created": 1, "existing": 2, "created_dir": ""}}
	again.Detail["in_progress"] = true
	wantStatus(t, restore(t, first, again, again2), restored, superseded, superseded)
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the folder the first attempt made: %v; want it gone", err)
	}

	// a file fill_disk was writing when it died, then finished: the candidate has since
	// truncated it, which the final record sees; the early one does not force it
	path := filepath.Join(base, "big.bin")
	os.WriteFile(path, []byte("chaosrun fill_disk\n"), 0o644)
	early := changed(kit.Change{Action: "create_file", Path: path, Detail: map[string]any{"in_progress": true, "written_by": "fill_disk"}})
	os.WriteFile(path, make([]byte, 100_000), 0o644)
	final := changed(kit.Change{Action: "create_file", Path: path, After: 0, Detail: map[string]any{"written_bytes": 100_000}})
	os.Truncate(path, 10)
	wantStatus(t, restore(t, early, final), changedSince, superseded)
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the file the candidate changed: %v; want it left", err)
	}
	wantStatus(t, restore(t, early), restored) // alone, it stands for the step
}

func TestAccountLockIsUndoneKeepingTheHash(t *testing.T) {
	shadow := filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(shadow, []byte("root:*:19000:0:99999:7:::\nalice:!$y$j9T$abc:19000:0:99999:7:::\n"), 0o640)
	c := kit.Change{Action: "edit_account", Path: shadow, Before: "<hash>", After: "!<hash>",
		Detail: map[string]any{"user": "alice", "field": "password", "index": 1}}
	wantStatus(t, restore(t, c), restored)
	if data, _ := os.ReadFile(shadow); string(data) != "root:*:19000:0:99999:7:::\nalice:$y$j9T$abc:19000:0:99999:7:::\n" {
		t.Fatalf("shadow: %q", data)
	}
	wantStatus(t, restore(t, c), already)
}

func TestUndoesNewestFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, nil, 0o644)
	os.Chmod(path, 0o600)
	first := changed(kit.Change{Action: "chmod", Path: path, Before: "0644", After: "0600"})
	os.Chmod(path, 0)
	second := changed(kit.Change{Action: "chmod", Path: path, Before: "0600", After: "0000"})
	wantStatus(t, restore(t, first, second), restored, restored)
	if m := mode(t, path); m != 0o644 {
		t.Fatalf("mode %04o; want 0644 (the second change undone before the first)", m)
	}
}

func TestAChangeItDoesNotKnowIsReportedNotGuessed(t *testing.T) {
	got := restore(t, kit.Change{Action: "run_command", After: "rm -rf /srv/www"})
	wantStatus(t, got, irreversible)
}

// A binary a killed monitor left (whole or cut short) goes; a file that is not one stays.
func TestLeftoversOfAnInterruptedDeployAreRemovedAndNothingElse(t *testing.T) {
	dir := t.TempDir()
	binary := []byte("\x7fELF the module binary")
	digest := digestOf(binary)
	whole, part, other, bigger := filepath.Join(dir, "tmp.a"), filepath.Join(dir, "tmp.b"), filepath.Join(dir, "tmp.c"), filepath.Join(dir, "tmp.d")
	os.WriteFile(whole, binary, 0o700)
	os.WriteFile(part, binary[:5], 0o700)
	os.WriteFile(other, []byte("\x7fELF the module binarX"), 0o700) // same size, other bytes
	os.WriteFile(bigger, append(binary, '!'), 0o700)
	spec := func(path string) string { return fmt.Sprintf("%s:%d:%s", digest, len(binary), path) }
	r := kit.NewTestReport()
	got := removeLeftovers([]string{spec(whole), spec(part), spec(other), spec(bigger), spec(filepath.Join(dir, "gone"))}, r)
	if strings.Join(got, " ") != whole+" "+part {
		t.Fatalf("removed %v", got)
	}
	for _, kept := range []string{other, bigger} {
		if _, err := os.Stat(kept); err != nil {
			t.Errorf("%s: %v", kept, err)
		}
	}
}
