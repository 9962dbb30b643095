package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

// smallFS mounts a tmpfs of sizeMB under a temp dir, or skips the test.
func smallFS(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestWritesRealBlocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fill.bin")
	r, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "size_mb": 3})
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != 3<<20 {
		t.Errorf("size: got %d; want %d", st.Size, 3<<20)
	}
	if st.Blocks*512 < st.Size {
		t.Errorf("allocated: got %d bytes; want at least %d (not sparse)", st.Blocks*512, st.Size)
	}
	if got := fmt.Sprint(r.Result()["written_mb"], r.Result()["disk_full"]); got != "3 false" {
		t.Errorf("result: got %q; want %q", got, "3 false")
	}
	ch := r.Changes()
	if len(ch) != 2 || ch[0].Action != "create_file" || ch[0].Path != path || ch[0].Detail["in_progress"] != true {
		t.Fatalf("changes: got %+v; want create_file %s streamed before the first block, then its final one", ch, path)
	}
	if ch[1].After != int64(3) || ch[1].Detail["in_progress"] != nil {
		t.Errorf("final change: got %+v; want 3 MiB written", ch[1])
	}
	if data, _ := os.ReadFile(path); !strings.HasPrefix(string(data), header) {
		t.Errorf("the file does not start with its mark %q", header)
	}
}

func TestAppliedAgainItTopsUpItsOwnFileAndThenSaysItIsInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fill.bin")
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "size_mb": 1}); err != nil {
		t.Fatal(err)
	}
	r, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "size_mb": 3}) // killed at 1 of 3 MiB
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 3<<20 || r.Result()["already_in_place"] != false || r.Result()["written_mb"] != int64(3) {
		t.Fatalf("got %d bytes, result %v; want topped up to 3 MiB", fi.Size(), r.Result())
	}
	again, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "size_mb": 3})
	if err != nil || again.Result()["already_in_place"] != true {
		t.Fatalf("again: got %v, result %v; want already in place", err, again.Result())
	}
	if fi, _ := os.Stat(path); fi.Size() != 3<<20 {
		t.Errorf("again: %d bytes; want 3 MiB, not doubled", fi.Size())
	}
}

func TestRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "existing")
	os.WriteFile(path, []byte("keep"), 0o644)
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "size_mb": 1}); err == nil {
		t.Errorf("got no error; want one for an existing file")
	}
	if got, _ := os.ReadFile(path); string(got) != "keep" {
		t.Errorf("got %q; want %q", got, "keep")
	}
}

func TestStopsCleanlyWhenTheFilesystemIsFull(t *testing.T) {
	dir := smallFS(t, "size=4m")
	path := filepath.Join(dir, "fill.bin")
	r, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "size_mb": 64})
	if err != nil {
		t.Fatalf("got %v; want ok at ENOSPC", err)
	}
	res := r.Result()
	if res["disk_full"] != true || res["written_mb"] != int64(4) || res["free_mb"] != int64(0) {
		t.Errorf("result: got %v; want disk_full, 4 MiB written, 0 free", res)
	}
}

func TestLeavesFreeSpace(t *testing.T) {
	dir := smallFS(t, "size=8m")
	r, err := moduletest.Run(t, declaration, run, map[string]any{"path": filepath.Join(dir, "fill.bin"), "size_mb": 64, "leave_free_mb": 3})
	if err != nil {
		t.Fatal(err)
	}
	res := r.Result()
	if res["disk_full"] != false || res["written_mb"] != int64(5) || res["free_mb"] != int64(3) {
		t.Errorf("result: got %v; want 5 MiB written, 3 free", res)
	}
}

func TestBinaryAgainstAFakeMonitor(t *testing.T) {
	bin := kittest.Build(t, ".")
	if fi, err := os.Stat(bin); err == nil && fi.Size() > 3<<20 {
		t.Errorf("binary: got %d bytes; want under 3 MiB", fi.Size())
	}
	mon := kittest.NewMonitor(t)
	path := filepath.Join(t.TempDir(), "fill.bin")
	res := mon.RunBinary(t, bin, "fill_disk", map[string]any{"path": path, "size_mb": 2}, 10*time.Second)
	if res.Exit != 0 || res.Outcome.Err != nil {
		t.Fatalf("got exit %d, monitor error %v, stderr %q; want 0", res.Exit, res.Outcome.Err, res.Stderr)
	}
	if got := fmt.Sprint(res.Outcome.ResultFields()["written_mb"]); got != "2" {
		t.Errorf("written_mb: got %q; want %q", got, "2")
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("binary still on disk: %v", err)
	}
}
