package sensors

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o755); err != nil {
		t.Fatal(err)
	}
}

func sum(text string) string {
	s := sha256.Sum256([]byte(text))
	return hex.EncodeToString(s[:])
}

// fake lays out a /proc/self, a /proc and a root (for /etc) in temp dirs.
func fake(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	c := Config{Proc: filepath.Join(dir, "proc"), Self: filepath.Join(dir, "self"), Root: filepath.Join(dir, "root"),
		PID: 100, PPID: 99, UID: 1000, Getenv: func(string) (string, bool) { return "", false }}
	write(t, filepath.Join(c.Self, "status"), "Name:\tmod\nTracerPid:\t0\n")
	write(t, filepath.Join(c.Self, "mountinfo"), "")
	write(t, c.Root+"/etc/passwd", "root:x:0:0::/root:/bin/bash\ncand:x:1000:1000::/home/cand:/bin/bash\n")
	write(t, c.Root+"/etc/ssh/sshd_config", "")
	os.MkdirAll(c.Proc, 0o755)
	return c
}

func TestTracerPIDIsReadFromStatusAndAMissingFileIsAnErrorString(t *testing.T) {
	c := fake(t)
	write(t, filepath.Join(c.Self, "status"), "Name:\tmod\nState:\tS\nTracerPid:\t4242\n")
	if got := Collect(c)["tracer_pid"]; got != 4242 {
		t.Errorf("tracer_pid = %v; want 4242", got)
	}
	os.Remove(filepath.Join(c.Self, "status"))
	if got, _ := Collect(c)["tracer_pid"].(string); !strings.HasPrefix(got, "error: ") {
		t.Errorf("tracer_pid without status = %q; want an error string", got)
	}
}

func TestHoldersOfTheStdinPipeAndTheBinaryAreFoundButNotUsOrOurParent(t *testing.T) {
	c := fake(t)
	link := func(path, target string) {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	}
	link(filepath.Join(c.Self, "fd", "0"), "pipe:[777]")
	link(filepath.Join(c.Self, "exe"), "/tmp/abc (deleted)")
	link(filepath.Join(c.Proc, "100", "fd", "0"), "pipe:[777]") // ourselves
	link(filepath.Join(c.Proc, "99", "fd", "1"), "pipe:[777]")  // the parent writing our stdin
	link(filepath.Join(c.Proc, "555", "fd", "9"), "pipe:[777]") // a watcher
	link(filepath.Join(c.Proc, "556", "fd", "3"), "/tmp/abc (deleted)")
	link(filepath.Join(c.Proc, "557", "fd", "3"), "pipe:[778]")
	s := Collect(c)
	if got := s["stdin_holders"]; !reflect.DeepEqual(got, []int{555}) {
		t.Errorf("stdin_holders = %v; want [555]", got)
	}
	if got := s["exe_holders"]; !reflect.DeepEqual(got, []int{556}) {
		t.Errorf("exe_holders = %v; want [556]", got)
	}
}

func TestTheFaultProcessesWeSpawnedAreNotHoldersOfOurExecutable(t *testing.T) {
	c := fake(t)
	for path, target := range map[string]string{
		filepath.Join(c.Self, "exe"):            "/tmp/abc (deleted)",
		filepath.Join(c.Proc, "600", "fd", "4"): "/tmp/abc (deleted)", // ours (kit.Spawn)
		filepath.Join(c.Proc, "601", "fd", "4"): "/tmp/abc (deleted)", // a stranger's
		filepath.Join(c.Proc, "602", "fd", "0"): "/dev/null",
	} {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
	}
	c.Own = []int{600, 602}
	s := Collect(c)
	if got := s["exe_holders"]; !reflect.DeepEqual(got, []int{601}) {
		t.Errorf("exe_holders = %v; want [601]", got)
	}
	Recheck(c, s)
	if got := s["exe_holders"]; !reflect.DeepEqual(got, []int{601}) {
		t.Errorf("exe_holders after Recheck = %v; want [601]", got)
	}
}

// A real process's stdin pipe, held open by this test process: the attack of a
// candidate who opens /proc/PID/fd/0 without reading it.
func TestARealProcessHoldingAnotherOnesStdinPipeIsFound(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	proc, err := os.StartProcess("/bin/sleep", []string{"sleep", "5"}, &os.ProcAttr{Files: []*os.File{r, nil, nil}})
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Wait()
	defer proc.Kill()
	r.Close()
	// Open it as a thief would: through /proc/PID/fd/0, without reading.
	held, err := os.OpenFile("/proc/"+strconv.Itoa(proc.Pid)+"/fd/0", os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	c := Config{Proc: "/proc", Self: "/proc/" + strconv.Itoa(proc.Pid), PID: proc.Pid, PPID: -1}
	var got any
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got = Collect(c)["stdin_holders"]; reflect.DeepEqual(got, []int{os.Getpid()}) {
			break
		}
	}
	if !reflect.DeepEqual(got, []int{os.Getpid()}) {
		t.Errorf("stdin_holders = %v; want [%d] (this test holds the pipe)", got, os.Getpid())
	}
	early := map[string]any{"tracer_pid": 0, "stdin_holders": []int{}, "exe_holders": "error: x"}
	Recheck(c, early) // a holder that came while the module ran
	if !reflect.DeepEqual(early["stdin_holders"], []int{os.Getpid()}) || early["exe_holders"] == "error: x" {
		t.Errorf("after Recheck = %v; want this test as a stdin holder", early)
	}
	c.PPID = os.Getpid() // the parent is skipped
	if got := Collect(c)["stdin_holders"]; !reflect.DeepEqual(got, []int{}) {
		t.Errorf("stdin_holders with the holder as parent = %v; want []", got)
	}
}

func TestEnvironmentReportsTheHookVariablesCut(t *testing.T) {
	c := fake(t)
	env := map[string]string{"BASH_ENV": "/tmp/hook", "PATH": "/usr/bin", "HOME": "/root", "LD_PRELOAD": strings.Repeat("x", 300)}
	c.Getenv = func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	got := Collect(c)["env"].(map[string]string)
	want := map[string]string{"BASH_ENV": "/tmp/hook", "PATH": "/usr/bin", "LD_PRELOAD": strings.Repeat("x", 200)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("env = %v; want %v", got, want)
	}
}

func TestLdSoPreloadIsHashedWhenPresent(t *testing.T) {
	c := fake(t)
	if got := Collect(c)["ld_so_preload"]; got != nil {
		t.Errorf("ld_so_preload without the file = %#v; want nil", got)
	}
	write(t, c.Root+"/etc/ld.so.preload", "/lib/evil.so\n")
	got := Collect(c)["ld_so_preload"].(map[string]any)
	if got["sha256"] != sum("/lib/evil.so\n") || got["size"] != int64(13) {
		t.Errorf("ld_so_preload = %v; want its hash and 13 bytes", got)
	}
}

func TestSshdLinesAreFoundThroughIncludes(t *testing.T) {
	c := fake(t)
	write(t, c.Root+"/etc/ssh/sshd_config", "# ForceCommand commented\nInclude /etc/ssh/sshd_config.d/*.conf\nAcceptEnv LANG LC_*\nPort 22\n")
	write(t, c.Root+"/etc/ssh/sshd_config.d/10-a.conf", "  SetEnv BASH_ENV=/tmp/hook\nInclude extra.conf\n")
	write(t, c.Root+"/etc/ssh/extra.conf", "forcecommand /tmp/wrap\nPermitUserEnvironment=yes\nInclude extra.conf\n")
	got := Collect(c)["sshd"].(map[string]any)
	lines := []string{"SetEnv BASH_ENV=/tmp/hook", "forcecommand /tmp/wrap", "PermitUserEnvironment=yes", "AcceptEnv LANG LC_*"}
	if !reflect.DeepEqual(got["lines"], lines) {
		t.Errorf("sshd lines = %q; want %q", got["lines"], lines)
	}
	if got["sha256"] != sum(strings.Join(lines, "\n")) || got["files"] != 3 {
		t.Errorf("sshd = %v; want the lines' hash over 3 files", got)
	}
}

func TestLoginReportsTheShellAndTheStartupFilesThatExist(t *testing.T) {
	c := fake(t)
	write(t, c.Root+"/home/cand/.bashrc", "alias ls=evil\n")
	write(t, c.Root+"/home/cand/.ssh/rc", "x\n")
	write(t, c.Root+"/etc/profile", "p\n")
	if err := syscall.Mkfifo(c.Root+"/home/cand/.profile", 0o644); err != nil { // must not block the sensor
		t.Fatal(err)
	}
	got := Collect(c)["login"].(map[string]any)
	files := map[string]string{"/home/cand/.bashrc": sum("alias ls=evil\n"), "/home/cand/.ssh/rc": sum("x\n"), "/etc/profile": sum("p\n"), "/home/cand/.profile": sum("")}
	if got["user"] != "cand" || got["shell"] != "/bin/bash" || !reflect.DeepEqual(got["files"], files) {
		t.Errorf("login = %v; want cand, /bin/bash and %v", got, files)
	}
	c.UID = 4321
	if s, _ := Collect(c)["login"].(string); !strings.Contains(s, "uid 4321 is not in /etc/passwd") {
		t.Errorf("login of an unknown uid = %q; want an error string", s)
	}
}

func TestMountsOverWatchedPlacesAndParamPathsAreReported(t *testing.T) {
	c := fake(t)
	c.Paths = ParamPaths(map[string]any{"path": "/srv/graded/file", "names": []any{"/opt/x", "rel"}, "n": 3, "root": "/"})
	write(t, filepath.Join(c.Self, "mountinfo"), strings.Join([]string{
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw",
		"23 22 0:5 / /proc rw,nosuid - proc proc rw",
		"30 23 0:40 / /proc/100 rw - tmpfs none rw",
		"31 22 0:41 / /usr/bin rw - tmpfs none rw",
		"32 22 0:42 / /srv/graded/file rw master:2 - tmpfs fake rw",
		"33 22 0:43 / /home/cand rw - tmpfs other rw",
		"34 22 0:44 / /etc/ssh\\040x rw - tmpfs sp rw",
		"garbage",
	}, "\n"))
	want := []string{"/proc proc proc", "/proc/100 tmpfs none", "/usr/bin tmpfs none", "/srv/graded/file tmpfs fake"}
	if got := Collect(c)["mounts"]; !reflect.DeepEqual(got, want) {
		t.Errorf("mounts = %q; want %q", got, want)
	}
}

func TestProcFSTellsProcFromADirectoryMadeToLookLikeIt(t *testing.T) {
	c := fake(t)
	if got := Collect(c)["proc_fs"]; got != false {
		t.Errorf("proc_fs of a temp dir = %v; want false", got)
	}
	c.Proc = "/proc"
	if got := Collect(c)["proc_fs"]; got != true {
		t.Errorf("proc_fs of /proc = %v; want true", got)
	}
}

func TestProgramsHashTheShellTheUploadCheckersAndTheResolvedTools(t *testing.T) {
	c := fake(t)
	bin := t.TempDir()
	write(t, c.Root+"/bin/sh", "shell")
	write(t, filepath.Join(bin, "b2sum"), "fake b2sum")
	write(t, filepath.Join(bin, "systemctl"), "fake systemctl")
	c.Getenv = func(k string) (string, bool) { return "relative:" + bin, k == "PATH" }
	got := Programs(c, []Tool{{"systemctl", filepath.Join(bin, "systemctl")}, {"nft", "/no/such/nft"}})
	want := map[string]any{
		"sh":        map[string]string{"path": "/bin/sh", "sha256": sum("shell")},
		"b2sum":     map[string]string{"path": filepath.Join(bin, "b2sum"), "sha256": sum("fake b2sum")},
		"systemctl": map[string]string{"path": filepath.Join(bin, "systemctl"), "sha256": sum("fake systemctl")},
	}
	nft := got["nft"].(map[string]string)
	delete(got, "nft")
	if !reflect.DeepEqual(got, want) {
		t.Errorf("programs = %v; want %v", got, want)
	}
	if !strings.HasPrefix(nft["sha256"], "error: ") {
		t.Errorf("a tool that is gone = %v; want an error string for its hash", nft)
	}
}

func TestSensorsOfThisProcessAreCheap(t *testing.T) {
	c := Default(nil)
	start := time.Now()
	s := Collect(c)
	Programs(c, nil)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("sensors took %v; want well under 20 ms on an idle machine", d)
	}
	if s["proc_fs"] != true || s["tracer_pid"] != 0 {
		t.Errorf("sensors of this process = %v; want procfs and no tracer", s)
	}
}

func TestAMountOverAProcesssDirectoryIsReportedAsProcMasked(t *testing.T) {
	c := fake(t)
	write(t, filepath.Join(c.Self, "mountinfo"), strings.Join([]string{
		"22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw",
		"23 22 0:5 / /proc rw,nosuid - proc proc rw",
		"30 23 0:40 / /proc/555 rw - tmpfs none rw",         // hides process 555
		"31 23 0:41 / /proc/556/comm rw - ext4 /dev/vda rw", // renames process 556
		"32 23 0:42 / /proc/sys/fs/binfmt_misc rw - binfmt_misc binfmt_misc rw",
		"33 23 0:43 / /proc/self/x rw - tmpfs none rw", // no pid: not a process's directory
	}, "\n"))
	want := []string{"/proc/555 tmpfs none", "/proc/556/comm ext4 /dev/vda"}
	if got := Collect(c)["proc_masked"]; !reflect.DeepEqual(got, want) {
		t.Errorf("proc_masked = %q; want %q", got, want)
	}
	write(t, filepath.Join(c.Self, "mountinfo"), "23 22 0:5 / /proc rw,nosuid - proc proc rw\n")
	if got := Collect(c)["proc_masked"]; !reflect.DeepEqual(got, []string{}) {
		t.Errorf("proc_masked without mounts over /proc/PID = %q; want []", got)
	}
	os.Remove(filepath.Join(c.Self, "mountinfo"))
	if _, found := Collect(c)["proc_masked"]; found {
		t.Errorf("proc_masked without a mountinfo: want it left out (mounts has the error)")
	}
}

// walks counts how many times do() opens the /proc of c (inotify sees each open of the
// directory itself; closes are watched too, since inotify merges two identical events in a
// row): the cost of the sensors that grows with the number of processes.
func walks(t *testing.T, c Config, do func()) int {
	t.Helper()
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		t.Skip("no inotify:", err)
	}
	defer syscall.Close(fd)
	if _, err := syscall.InotifyAddWatch(fd, c.Proc, syscall.IN_OPEN|syscall.IN_CLOSE_NOWRITE); err != nil {
		t.Fatal(err)
	}
	do()
	opens := 0
	buf := make([]byte, 1<<16)
	for {
		n, err := syscall.Read(fd, buf)
		if n <= 0 || err != nil {
			return opens
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			if ev.Len == 0 && ev.Mask&syscall.IN_OPEN != 0 { // the directory itself, not a pid's
				opens++
			}
			off += syscall.SizeofInotifyEvent + int(ev.Len)
		}
	}
}

func TestEachCollectAndEachRecheckWalksProcOnceForAllTheHolderChecks(t *testing.T) {
	c := fake(t)
	for pid := 200; pid < 260; pid++ {
		dir := filepath.Join(c.Proc, strconv.Itoa(pid), "fd")
		os.MkdirAll(dir, 0o755)
		os.Symlink("pipe:[1]", filepath.Join(dir, "0"))
	}
	var s map[string]any
	if got := walks(t, c, func() { s = Collect(c) }); got != 1 {
		t.Errorf("Collect walked /proc %d times; want 1", got)
	}
	if got := walks(t, c, func() { Recheck(c, s); Programs(c, nil) }); got != 1 {
		t.Errorf("Recheck and Programs walked /proc %d times; want 1", got)
	}
}

func TestSshOriginalCommandIsReported(t *testing.T) {
	c := fake(t)
	c.Getenv = func(k string) (string, bool) { return "exec 3<x", k == "SSH_ORIGINAL_COMMAND" }
	if got := Collect(c)["env"]; !reflect.DeepEqual(got, map[string]string{"SSH_ORIGINAL_COMMAND": "exec 3<x"}) {
		t.Errorf("env = %v; want SSH_ORIGINAL_COMMAND (sshd ran a ForceCommand)", got)
	}
}
