package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/procfs"
)

// TestMain lets kit.Spawn re-execute this test binary as the load process.
func TestMain(m *testing.M) {
	kit.RunIfChild(kit.Module{Background: background})
	os.Exit(m.Run())
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// cpuTicks is utime+stime of pid.
func cpuTicks(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	_, rest, ok := procfs.SplitStat(string(b))
	if err != nil || !ok || len(rest) < 13 || rest[0] == "Z" {
		t.Fatalf("process %d is gone", pid)
	}
	u, _ := strconv.ParseInt(rest[11], 10, 64)
	s, _ := strconv.ParseInt(rest[12], 10, 64)
	return u + s
}

func TestCPUStressRunsANamedBusyProcessThatStopsByItself(t *testing.T) {
	name := kittest.UniqueName("cpuhog")
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"workers": 1, "duration": 3, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid, _ := r.Result()["pid"].(int)
	if pid <= 0 {
		t.Fatalf("result pid = %#v", r.Result()["pid"])
	}
	kittest.KillAtCleanup(t, pid, name)

	if comm := kittest.Comm(pid); comm != name {
		t.Errorf("comm = %q; want %q", comm, name)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if got := strings.TrimRight(string(cmdline), "\x00"); got != name {
		t.Errorf("cmdline = %q; want %q and nothing else", got, name)
	}
	environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if len(environ) != 0 {
		t.Errorf("environ = %q; want it empty", environ)
	}
	before := cpuTicks(t, pid)
	time.Sleep(time.Second)
	// An idle process uses none; a busy one gets a share of a CPU even while
	// other test packages (or a whole test suite) load this machine: 16 of 100
	// ticks were seen on 2 CPUs at a load average of 10.
	if used := cpuTicks(t, pid) - before; used < 5 {
		t.Errorf("used %d CPU ticks in 1s; want >= 5 (one busy worker, not an idle one)", used)
	}
	if !kittest.WaitGone(pid, 5*time.Second) {
		t.Errorf("load process %d still runs 5s after a 3s duration", pid)
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Action != "spawn_process" {
		t.Fatalf("changes = %+v; want one spawn_process", ch)
	}
}

func TestCPUStressDefaultsToOneWorkerPerCPUAndStopsOnSIGTERM(t *testing.T) {
	name := kittest.UniqueName("cpuhog")
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"duration": 60, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid := r.Result()["pid"].(int)
	kittest.KillAtCleanup(t, pid, name)
	if got := r.Result()["workers"]; got != int64(runtime.NumCPU()) {
		t.Errorf("workers = %v; want %d", got, runtime.NumCPU())
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if len(tasks) < runtime.NumCPU() {
		t.Errorf("%d threads; want at least one per CPU (%d)", len(tasks), runtime.NumCPU())
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !kittest.WaitGone(pid, 2*time.Second) {
		t.Errorf("load process %d still runs 2s after SIGTERM", pid)
	}
}

func TestCPUStressLongNameIsCutToFifteenBytesInComm(t *testing.T) {
	name := kittest.UniqueName("kworker/u8:3-") // 19 bytes
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"workers": 1, "duration": 5, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid := r.Result()["pid"].(int)
	kittest.KillAtCleanup(t, pid, name[:15])
	if comm := kittest.Comm(pid); comm != name[:15] {
		t.Errorf("comm = %q; want %q", comm, name[:15])
	}
}

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER, which package syscall lacks.
const prSetChildSubreaper = 36

// TestBuiltBinarySpawnsTheLoadFromItsUnlinkedSelf runs the module the way the
// monitor does: built, config on stdin, callback to a fake monitor.
func TestBuiltBinarySpawnsTheLoadFromItsUnlinkedSelf(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module")
	}
	// Orphans of the binary come back to this process, so they can be reaped.
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", e)
	}
	bin := kittest.Build(t, ".")
	if st, err := os.Stat(bin); err == nil {
		t.Logf("binary size %d bytes", st.Size()) // mostly the kit's; the 3 MB budget is checked across modules
	}
	name := kittest.UniqueName("cpuhog")
	mon := kittest.NewMonitor(t)
	res := mon.RunBinary(t, bin, "cpu_stress", map[string]any{"workers": 1, "duration": 30, "process_name": name}, 10*time.Second)
	if res.Exit != 0 || res.Outcome.Err != nil {
		t.Fatalf("exit %d, monitor %v, stderr %q", res.Exit, res.Outcome.Err, res.Stderr)
	}
	// The fake monitor's numbers are its own decoder's type; their text is the number.
	pid, _ := strconv.Atoi(fmt.Sprint(res.Outcome.ResultFields()["pid"]))
	if pid <= 0 {
		t.Fatalf("result pid = %#v; want a pid", res.Outcome.ResultFields()["pid"])
	}
	t.Cleanup(func() {
		if kittest.Alive(pid) && kittest.Comm(pid) == name {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	})
	if _, err := os.Stat(bin); !os.IsNotExist(err) {
		t.Errorf("binary still on disk (%v); want it unlinked", err)
	}
	if comm, ok := kittest.Comm(pid), kittest.Alive(pid); !ok || comm != name {
		t.Fatalf("process %d: comm %q alive %v; want %q running", pid, comm, ok, name)
	}
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); !strings.HasSuffix(exe, "(deleted)") {
		t.Errorf("exe = %q; want the deleted binary", exe)
	}
}
