package procfs

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// statLine is a /proc/PID/stat line: 52 fields, with comm, state, ppid, flags and
// starttime as given.
func statLine(pid int, comm, state string, ppid int, flags uint64, start uint64) string {
	f := make([]string, 50)
	for i := range f {
		f[i] = "0"
	}
	f[0], f[1], f[6], f[19] = state, strconv.Itoa(ppid), strconv.FormatUint(flags, 10), strconv.FormatUint(start, 10)
	return strconv.Itoa(pid) + " (" + comm + ") " + strings.Join(f, " ") + "\n"
}

// fakeProc writes procDir/PID/stat and, when cmdline is not nil, cmdline.
func fakeProc(t *testing.T, procDir string, pid int, stat string, cmdline []byte) {
	t.Helper()
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
	if cmdline != nil {
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), cmdline, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSplitStatCutsCommAtTheLastParenthesis(t *testing.T) {
	comm, rest, ok := SplitStat("42 (a) b (c)) S 1 2\n")
	if !ok || comm != "a) b (c)" || !reflect.DeepEqual(rest, []string{"S", "1", "2"}) {
		t.Errorf("SplitStat = %q, %q, %v; want comm %q, rest [S 1 2]", comm, rest, ok, "a) b (c)")
	}
	if _, _, ok := SplitStat("42 no comm"); ok {
		t.Error("SplitStat without parentheses: ok; want not ok")
	}
}

func TestReadParsesStatAndCmdline(t *testing.T) {
	dir := t.TempDir()
	fakeProc(t, dir, 100, statLine(100, "nginx: master", "S", 1, 0, 777), []byte("nginx: master process /usr/sbin/nginx\x00-g\x00daemon on;\x00"))
	fakeProc(t, dir, 2, statLine(2, "kthreadd", "S", 0, pfKthread, 5), []byte{})
	fakeProc(t, dir, 7, "7 S 1\n", nil)
	fakeProc(t, dir, 8, "8 (short) S 1 2 3\n", nil)
	os.WriteFile(filepath.Join(dir, "uptime"), []byte("1 2\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "sys"), 0o755)

	p, err := Read(dir, 100)
	want := Process{PID: 100, PPID: 1, Comm: "nginx: master", State: "S", Start: 777,
		Cmdline: []string{"nginx: master process /usr/sbin/nginx", "-g", "daemon on;"}}
	if err != nil || !reflect.DeepEqual(p, want) {
		t.Errorf("Read(100) = %+v, %v; want %+v", p, err, want)
	}
	if p, err := Read(dir, 2); err != nil || !p.Kthread || p.Cmdline != nil {
		t.Errorf("Read(2) = %+v, %v; want a kernel thread without a cmdline", p, err)
	}
	if _, err := Read(dir, 7); err == nil || !strings.Contains(err.Error(), "no comm") {
		t.Errorf("Read(7) = %v; want a 'no comm' error", err)
	}
	if _, err := Read(dir, 8); err == nil || !strings.Contains(err.Error(), "6 fields") {
		t.Errorf("Read(8) = %v; want a '6 fields' error", err)
	}
	if state, err := State(dir, 100); err != nil || state != "S" {
		t.Errorf("State(100) = %q, %v; want S", state, err)
	}
	if _, err := State(dir, 7); err == nil || !strings.Contains(err.Error(), "no state") {
		t.Errorf("State(7) = %v; want a 'no state' error", err)
	}
	if _, err := State(dir, 9); !os.IsNotExist(err) {
		t.Errorf("State(9) = %v; want not exist", err)
	}
	if _, err := Read(dir, 9); !os.IsNotExist(err) {
		t.Errorf("Read(9) = %v; want not exist", err)
	}
	procs, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range procs {
		pids = append(pids, p.PID)
	}
	if !reflect.DeepEqual(pids, []int{100, 2}) && !reflect.DeepEqual(pids, []int{2, 100}) {
		t.Errorf("List = %v; want processes 2 and 100 only", pids)
	}
	if _, err := List(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "list processes: ") {
		t.Errorf("List(missing) = %v; want 'list processes: ...'", err)
	}
}

func TestReadSeesThisProcess(t *testing.T) {
	p, err := Read("/proc", os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if p.PPID != os.Getppid() || p.Exited() || p.Kthread || p.Start == 0 || len(p.Cmdline) == 0 || p.Cmdline[0] != os.Args[0] {
		t.Errorf("Read(self) = %+v; want this live process", p)
	}
}

func TestHasNameMatchesCommArgv0AndItsBasename(t *testing.T) {
	p := Process{Comm: "nginx", Cmdline: []string{"nginx: master process /usr/sbin/nginx", "-g", "daemon on;"}}
	for _, name := range []string{"nginx", "nginx: master process /usr/sbin/nginx"} {
		if !p.HasName(name) {
			t.Errorf("HasName(%q) = false; want true", name)
		}
	}
	q := Process{Comm: "python3", Cmdline: []string{"/usr/bin/python3", "app.py"}}
	if !q.HasName("python3") || q.HasName("app.py") || q.HasName("python") {
		t.Errorf("python3 matching is wrong")
	}
	if (Process{Comm: "kworker/0:1"}).HasName("") {
		t.Errorf("a process without cmdline matched the empty name")
	}
}

func TestWaitNamedWaitsForTheNameAndReportsAnEarlyExit(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	fakeProc(t, dir, 10, statLine(10, "rsyslogd-longer-n", "S", 1, 0, 4242), nil) // as the kernel cuts it below
	fakeProc(t, dir, 11, statLine(11, "old-name", "S", 1, 0, 1), nil)
	fakeProc(t, dir, 12, statLine(12, "zombie", "Z", 1, 0, 1), nil)

	os.WriteFile(filepath.Join(dir, "10", "stat"), []byte(statLine(10, "rsyslogd-longer", "S", 1, 0, 4242)), 0o644)
	if start, err := WaitNamed(ctx, dir, 10, "rsyslogd-longer-name", time.Second); err != nil || start != 4242 {
		t.Errorf("WaitNamed(10) = %d, %v; want 4242 (the name cut to 15 bytes)", start, err)
	}
	_, err := WaitNamed(ctx, dir, 11, "new-name", 50*time.Millisecond)
	if want := `process 11 is still "old-name" after 50ms; want "new-name"`; err == nil || err.Error() != want {
		t.Errorf("WaitNamed(11) = %v; want %q", err, want)
	}
	for _, pid := range []int{12, 13} {
		if _, err := WaitNamed(ctx, dir, pid, "zombie", time.Second); err == nil || err.Error() != "process "+strconv.Itoa(pid)+" exited at once" {
			t.Errorf("WaitNamed(%d) = %v; want 'exited at once'", pid, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := WaitNamed(cctx, dir, 11, "new-name", time.Second); err != context.Canceled {
		t.Errorf("WaitNamed with an ended context = %v; want context.Canceled", err)
	}
}
