package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

// TestMain lets kit.Spawn re-execute this test binary as the rogue process.
func TestMain(m *testing.M) {
	kit.RunIfChild(kit.Module{Background: background})
	os.Exit(m.Run())
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// rogue runs the module and returns the process's pid, killed at cleanup.
func rogue(t *testing.T, raw string) (int, *kit.Report) {
	t.Helper()
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatalf("run(%s): %v", raw, err)
	}
	pid, _ := r.Result()["pid"].(int)
	if pid <= 0 {
		t.Fatalf("pid = %#v", r.Result()["pid"])
	}
	kittest.KillAtCleanup(t, pid, kittest.Comm(pid))
	return pid, r
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestWriteKeepsAppendingUnderItsNameAndStopsAtMaxMB(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	name := kittest.UniqueName("logd-")
	pid, r := rogue(t, fmt.Sprintf(`{"action": "write", "path": %q, "rate_kb": 2048, "max_mb": 1, "process_name": %q}`, path, name))
	if got := kittest.Comm(pid); got != name {
		t.Errorf("comm = %q; want %q", got, name)
	}
	if r.Result()["holds"] != path {
		t.Errorf("holds = %v; want %s", r.Result()["holds"], path)
	}
	deadline := time.Now().Add(5 * time.Second)
	for size(t, path) < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %d bytes after 5 s at 2 MiB/s; want 1 MiB", path, size(t, path))
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := size(t, path); got != 1<<20 {
		t.Errorf("size = %d; want it to stop at max_mb, 1048576", got)
	}
	b, _ := os.ReadFile(path)
	if first, _, _ := strings.Cut(string(b), "\n"); !strings.Contains(first, "DEBUG worker[1]: request 1 ") {
		t.Errorf("first line %q; want a log line", first)
	}
	if !kittest.Alive(pid) {
		t.Error("the writer ended at max_mb; want it to go on holding the file")
	}
	changes := r.Changes()
	if len(changes) != 2 || changes[0].Action != "spawn_process" || changes[1].Action != "create_file" || changes[1].Path != path {
		t.Fatalf("changes = %+v; want spawn_process, then create_file of the file it made", changes)
	}
}

func TestHoldWithLockKeepsFlockAndPosixLockersOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock-frontend")
	rogue(t, fmt.Sprintf(`{"action": "hold", "path": %q, "lock": true, "process_name": %q}`, path, kittest.UniqueName("apt-")))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
		t.Errorf("flock by another process: %v; want EWOULDBLOCK", err)
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil || lk.Type != syscall.F_WRLCK {
		t.Errorf("F_GETLK = %+v, %v; want a write lock held by the rogue process", lk, err)
	}
	if flock, err := exec.LookPath("flock"); err == nil {
		out, err := exec.Command(flock, "-n", path, "true").CombinedOutput()
		if err == nil {
			t.Errorf("flock(1) -n got the lock: %s", out)
		}
	}
}

func TestListenHoldsThePortUntilItsDurationEnds(t *testing.T) {
	port := kittest.FreePort(t, "tcp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	_, r := rogue(t, fmt.Sprintf(`{"action": "listen", "port": %d, "address": "127.0.0.1", "duration": 1, "process_name": %q}`, port, kittest.UniqueName("squat-")))
	if got := r.Result()["holds"]; got != addr+"/tcp" {
		t.Errorf("holds = %v; want %s/tcp", got, addr)
	}
	if until, _ := r.Result()["until"].(float64); until < float64(time.Now().Unix()) {
		t.Errorf("until = %v; want about a second from now", until)
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("%s was free; want it held", addr)
	}
	deadline := time.Now().Add(4 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still held 4 s after a 1 s duration", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRefusesWhatItCannotDoBeforeStartingAnything(t *testing.T) {
	_, taken := kittest.Listen(t)
	dir := t.TempDir()
	for raw, want := range map[string]string{
		`{"action": "write"}`:  "needs a path",
		`{"action": "listen"}`: "needs a port",
		fmt.Sprintf(`{"action": "hold", "path": %q}`, filepath.Join(dir, "no", "such")): "does not exist",
		fmt.Sprintf(`{"action": "hold", "path": %q}`, dir):                              "not a regular file",
		fmt.Sprintf(`{"action": "listen", "port": %d, "address": "127.0.0.1"}`, taken):  "is not free",
	} {
		r := kit.NewTestReport()
		err := run(context.Background(), moduletest.Params(t, declaration, raw), r)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("run(%s) = %v; want %q", raw, err, want)
		}
		if len(r.Changes()) != 0 {
			t.Errorf("run(%s) recorded %v; want nothing started", raw, r.Changes())
		}
	}
}
