package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func probe(t *testing.T, path string) (map[string]any, error) {
	t.Helper()
	r, err := moduletest.Run(t, declaration, run, map[string]any{"path": path})
	return r.Result(), err
}

// smallTmpfs mounts a 64 MiB tmpfs with 1000 inodes on a temp dir of this
// test and unmounts it at cleanup.
func smallTmpfs(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=64m,nr_inodes=1000"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

func TestDiskFreeFollowsWhatIsWrittenOnASmallTmpfs(t *testing.T) {
	dir := smallTmpfs(t)
	res, err := probe(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if res["total_mb"] != int64(64) || res["free_mb"] != int64(64) || res["used_percent"] != 0.0 || res["total_inodes"] != int64(1000) {
		t.Errorf("empty tmpfs: %v; want 64 of 64 MB free, 0%% used, 1000 inodes", res)
	}
	inodes := res["free_inodes"].(int64)

	if err := os.WriteFile(filepath.Join(dir, "fill"), make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err = probe(t, filepath.Join(dir, "fill")) // a file names its filesystem too
	if err != nil {
		t.Fatal(err)
	}
	if res["free_mb"] != int64(48) || res["used_percent"] != 25.0 || res["free_inodes"] != inodes-1 {
		t.Errorf("after 16 MB: %v; want 48 MB free, 25%% used, %d free inodes", res, inodes-1)
	}
}

func TestDiskFreeAgreesWithDf(t *testing.T) {
	dir := t.TempDir()
	out, err := exec.Command("df", "-P", "-B1M", dir).Output()
	if err != nil {
		t.Skipf("df: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	res, err := probe(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	// df -B1M rounds up; we round down. Other writers may move it a little.
	dfTotal, err1 := strconv.ParseInt(fields[1], 10, 64)
	dfAvail, err2 := strconv.ParseInt(fields[3], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("cannot read df's line %q", lines[len(lines)-1])
	}
	if d := dfTotal - res["total_mb"].(int64); d < 0 || d > 1 {
		t.Errorf("total_mb %v; df says %d", res["total_mb"], dfTotal)
	}
	if d := dfAvail - res["free_mb"].(int64); d < -16 || d > 16 {
		t.Errorf("free_mb %v; df says %d", res["free_mb"], dfAvail)
	}
}

func TestDiskFreeOfAMissingPathIsAnError(t *testing.T) {
	_, err := probe(t, filepath.Join(t.TempDir(), "gone"))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("run = %v; want a 'no such file' error", err)
	}
}
