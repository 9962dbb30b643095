package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

// TestMain lets kit.Spawn re-execute this test binary as the holding process.
func TestMain(m *testing.M) {
	kit.RunIfChild(kit.Module{Background: background})
	os.Exit(m.Run())
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// checkHolder checks what ps, top and ls -l /proc/PID/fd show of pid.
func checkHolder(t *testing.T, pid int, name, path string) {
	t.Helper()
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if got, want := strings.TrimSpace(string(comm)), name[:min(15, len(name))]; got != want {
		t.Errorf("comm: got %q; want %q", got, want)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if got := string(cmdline); got != name+"\x00" {
		t.Errorf("cmdline: got %q; want %q", got, name+"\x00")
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s still has a name: %v", path, err)
	}
	held := false
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range entries {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); target == path+" (deleted)" {
			held = true
		}
	}
	if !held {
		t.Errorf("no fd of %d links to %q", pid, path+" (deleted)")
	}
}

func TestSpawnsAHolderOfADeletedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "messages")
	p, err := kit.NewParams(declaration, map[string]any{"path": path, "size_mb": 3})
	if err != nil {
		t.Fatal(err)
	}
	r := kit.NewTestReport()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = run(ctx, p, r)
	pid, _ := r.Result()["pid"].(int)
	if pid > 0 {
		defer syscall.Kill(pid, syscall.SIGKILL)
	}
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Result()["size_mb"]; got != int64(3) {
		t.Errorf("size_mb: got %v; want 3", got)
	}
	checkHolder(t, pid, "rsyslogd", path)
	if ch := r.Changes(); len(ch) != 1 || ch[0].Detail["pid"] != pid {
		t.Errorf("changes: got %+v; want spawn_process with the pid", ch)
	}
	// The candidate's fix: kill it; the process goes away and frees the space.
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d/fd", pid)); err != nil {
			return
		}
	}
	t.Errorf("process %d still holds its fds after SIGTERM", pid)
}

func TestRefusesAnExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keep")
	os.WriteFile(path, []byte("x"), 0o644)
	p, _ := kit.NewParams(declaration, map[string]any{"path": path})
	if err := run(context.Background(), p, kit.NewTestReport()); err == nil {
		t.Errorf("got no error; want a refusal")
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("existing file removed: %v", err)
	}
}

func TestBinaryHolderOutlivesTheUnlinkedBinary(t *testing.T) {
	bin := kittest.Build(t, ".")
	mon := kittest.NewMonitor(t)
	path := filepath.Join(t.TempDir(), "access.log")
	const name = "nginx: worker process"
	res := mon.RunBinary(t, bin, "deleted_open_file", map[string]any{"path": path, "size_mb": 1, "process_name": name}, 10*time.Second)
	pid := 0
	fmt.Sscan(fmt.Sprint(res.Outcome.ResultFields()["pid"]), &pid)
	if pid > 0 {
		defer syscall.Kill(pid, syscall.SIGKILL)
	}
	if res.Exit != 0 || res.Outcome.Err != nil {
		t.Fatalf("got exit %d, monitor error %v, stderr %q; want 0", res.Exit, res.Outcome.Err, res.Stderr)
	}
	checkHolder(t, pid, name, path)
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); !strings.HasSuffix(exe, "(deleted)") {
		t.Errorf("exe: got %q; want the unlinked binary", exe)
	}
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if len(environ) != 0 {
		t.Errorf("environ: got %q; want empty", environ)
	}
}
