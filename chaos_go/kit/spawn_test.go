package kit

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/kittest"
)

// spawnTestModule is the Background run by this test binary when Spawn re-executes it.
var spawnTestModule = Module{Background: func(ctx context.Context, args map[string]any) error {
	ready, _ := args["ready"].(string)
	if err := os.WriteFile(ready, []byte(fmt.Sprint(os.Getpid())), 0o600); err != nil {
		return err
	}
	<-ctx.Done()
	return os.WriteFile(ready+".stopped", nil, 0o600)
}}

func TestMain(m *testing.M) {
	RunIfChild(spawnTestModule)
	os.Exit(m.Run())
}

// waitFile polls for path to exist, up to 5 s.
func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil {
			return b
		}
	}
	t.Fatalf("%s did not appear", path)
	return nil
}

// checkFaultProcess checks what a candidate would see of the spawned process pid.
func checkFaultProcess(t *testing.T, pid int, name string, secrets ...string) {
	t.Helper()
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	comm, _ := os.ReadFile(filepath.Join(proc, "comm"))
	wantComm := name
	if len(wantComm) > 15 {
		wantComm = wantComm[:15]
	}
	if got := strings.TrimSpace(string(comm)); got != wantComm {
		t.Errorf("comm: got %q; want %q", got, wantComm)
	}
	tasks, _ := filepath.Glob(filepath.Join(proc, "task", "*", "comm"))
	for _, task := range tasks {
		if b, _ := os.ReadFile(task); strings.TrimSpace(string(b)) != wantComm {
			t.Errorf("%s: got %q; want %q", task, strings.TrimSpace(string(b)), wantComm)
		}
	}
	cmdline, _ := os.ReadFile(filepath.Join(proc, "cmdline"))
	if got := string(cmdline); got != name+"\x00" {
		t.Errorf("cmdline: got %q; want %q", got, name+"\x00")
	}
	environ, err := os.ReadFile(filepath.Join(proc, "environ"))
	if err != nil || len(environ) != 0 {
		t.Errorf("environ: got %q, %v; want empty", environ, err)
	}
	for _, s := range secrets {
		if bytes.Contains(cmdline, []byte(s)) || bytes.Contains(environ, []byte(s)) {
			t.Errorf("a secret shows in cmdline or environ")
		}
	}
	if cwd, _ := os.Readlink(filepath.Join(proc, "cwd")); cwd != "/" {
		t.Errorf("cwd: got %q; want %q", cwd, "/")
	}
	for fd := 0; fd <= 2; fd++ {
		if got, _ := os.Readlink(filepath.Join(proc, "fd", strconv.Itoa(fd))); got != "/dev/null" {
			t.Errorf("fd %d: got %q; want %q", fd, got, "/dev/null")
		}
	}
	// fd 3 may be reused at once (the ready file is written through it): only a pipe there
	// is the args pipe left open
	if link, err := os.Readlink(filepath.Join(proc, "fd", "3")); err == nil && strings.HasPrefix(link, "pipe:") {
		t.Errorf("fd 3 (the args pipe) is still open: %s", link)
	}
	if sid, err := syscall.Getpgid(pid); err != nil || sid != pid {
		t.Errorf("process group: got %d, %v; want %d (a new session)", sid, err, pid)
	}
}

func TestSpawnStartsADetachedChildUnderAPlausibleName(t *testing.T) {
	ready := filepath.Join(t.TempDir(), "ready")
	const name = "nginx: worker process"
	pid, err := Spawn(context.Background(), name, map[string]any{"ready": ready})
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if got := strings.TrimSpace(string(waitFile(t, ready))); got != strconv.Itoa(pid) {
		t.Errorf("pid: got %q; want %q", got, strconv.Itoa(pid))
	}
	checkFaultProcess(t, pid, name)
	// SIGTERM ends the Background context: the body returns and the process exits.
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFile(t, ready+".stopped")
}

func TestIsChildIsFalseInANormalProcess(t *testing.T) {
	if IsChild() {
		t.Errorf("IsChild: got true; want false")
	}
}

func TestBuiltBinaryUnlinksItselfAndSpawnsThroughProcSelfExe(t *testing.T) {
	bin := kittest.Build(t, "./testdata/spawner")
	if st, err := os.Stat(bin); err != nil {
		t.Fatal(err)
	} else if st.Size() > 3<<20+128<<10 {
		t.Errorf("binary size: got %d; want under 3.125 MiB (docs/module-authoring.md, \"Binary size\")", st.Size())
	}
	mon := kittest.NewMonitor(t)
	mon.Compress = true
	ready := filepath.Join(t.TempDir(), "ready")
	const name = "kworker/1:2-events"
	res := mon.RunBinary(t, bin, "spawner", map[string]any{"process_name": name, "ready": ready}, 5*time.Second)
	if res.Exit != ExitOK || res.Outcome.Err != nil {
		t.Fatalf("got exit %d, monitor error %v, stderr %q; want 0", res.Exit, res.Outcome.Err, res.Stderr)
	}
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("binary still on disk: stat error %v", err)
	}
	pid, err := strconv.Atoi(fmt.Sprint(res.Outcome.ResultFields()["pid"]))
	if err != nil {
		t.Fatalf("pid: %v", err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	waitFile(t, ready)
	checkFaultProcess(t, pid, name, mon.Token)
	exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if !strings.HasSuffix(exe, "(deleted)") {
		t.Errorf("exe: got %q; want the unlinked binary", exe)
	}
	if got := res.Outcome.LogMessages(); len(got) != 1 || got[0] != fmt.Sprintf("spawned %d", pid) {
		t.Errorf("logs: got %q; want the spawn line", got)
	}
	// The fault process runs the binary's executable by design: the tamper sensors, which
	// look at the holders again when the module reports, must not take it for a watcher.
	sensed, _ := res.Outcome.Result["sensors"].(map[string]any)
	if holders, ok := sensed["exe_holders"].([]any); !ok || len(holders) != 0 {
		t.Errorf("exe_holders: got %v; want [] (the spawned pid %d is ours)", sensed["exe_holders"], pid)
	}
}

func TestArgIntReadsJSONNumbersAndGoIntegers(t *testing.T) {
	args := map[string]any{"f": float64(3600), "i": 7, "i64": int64(-2), "s": "5"}
	for key, want := range map[string]int64{"f": 3600, "i": 7, "i64": -2, "s": 0, "missing": 0} {
		if got := ArgInt(args, key); got != want {
			t.Errorf("ArgInt(%q) = %d; want %d", key, got, want)
		}
	}
}
