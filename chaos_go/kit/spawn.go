package kit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"chaosrun/chaos_go/kit/internal/jsonx"
)

// childFD is the descriptor on which a spawned process receives its arguments.
const childFD = 3

// commLen is the size of the kernel's task comm name, NUL included.
const commLen = 16

// Spawn starts a detached fault process: this same binary, re-executed through
// /proc/self/exe (which works although the file was unlinked), in a new session, with
// stdio on /dev/null, argv = [processName], no environment at all, and cwd "/". args reach
// the child as JSON on an inherited pipe (fd 3); the child then runs Module.Background with
// a context that ends on SIGTERM or SIGINT (and never otherwise: "until killed" is
// <-ctx.Done()). The child outlives this process; Spawn does not wait for it.
func Spawn(ctx context.Context, processName string, args map[string]any) (pid int, err error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if processName == "" {
		return 0, errors.New("spawn: empty process name")
	}
	// The child's message is {"args": ...}: never the step's token or key.
	msg, err := jsonx.Marshal(map[string]any{"args": args})
	if err != nil {
		return 0, fmt.Errorf("spawn %s: encode args: %w", processName, err)
	}
	devNull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("spawn %s: %w", processName, err)
	}
	defer devNull.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("spawn %s: pipe: %w", processName, err)
	}
	defer pw.Close()
	// os.StartProcess rather than os/exec, which would add 0.3 MB to every binary.
	proc, err := os.StartProcess("/proc/self/exe", []string{processName}, &os.ProcAttr{
		Dir:   "/",
		Env:   []string{},
		Files: []*os.File{devNull, devNull, devNull, pr},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	pr.Close()
	if err != nil {
		return 0, fmt.Errorf("spawn %s: %w", processName, err)
	}
	pid = proc.Pid
	spawnedMu.Lock()
	spawned = append(spawned, pid)
	spawnedMu.Unlock()
	go reapChild(proc)
	if _, err := pw.Write(msg); err != nil {
		_ = proc.Kill()
		return 0, fmt.Errorf("spawn %s: send args: %w", processName, err)
	}
	return pid, nil
}

// spawned are the PIDs Spawn started in this process: the tamper sensors leave them out of
// the processes that hold the binary's executable (they run it by design).
var (
	spawnedMu sync.Mutex
	spawned   []int
)

// Spawned returns the PIDs of the processes Spawn started in this process.
func Spawned() []int {
	spawnedMu.Lock()
	defer spawnedMu.Unlock()
	return append([]int(nil), spawned...)
}

// ArgInt reads an integer from the args of a Background function: they travel as JSON,
// so numbers arrive as float64 (an int or int64 is taken too, for a test calling
// Background directly). A missing or non-numeric argument is 0.
func ArgInt(args map[string]any, key string) int64 {
	switch v := args[key].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	}
	return 0
}

// reapChild is the goroutine that collects a spawned child's exit status, should it end
// while this process still runs, so it never lingers as a zombie.
func reapChild(proc *os.Process) {
	_, _ = proc.Wait()
}

// IsChild reports whether this process was started by Spawn: fd 3 is an inherited pipe and
// the process leads its own session. Stdin is not touched.
func IsChild() bool {
	var st syscall.Stat_t
	if err := syscall.Fstat(childFD, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		return false
	}
	sid, _, errno := syscall.RawSyscall(syscall.SYS_GETSID, 0, 0, 0)
	return errno == 0 && int(sid) == os.Getpid()
}

// RunIfChild runs m.Background and exits when this process was started by Spawn, and
// returns otherwise. Main calls it first; a module's TestMain may call it too, so a test
// can Spawn its own test binary as the fault process.
func RunIfChild(m Module) {
	if !IsChild() {
		return
	}
	os.Exit(runChild(m, os.NewFile(childFD, "spawn-args")))
}

// runChild is the life of a spawned process; it returns the exit code.
func runChild(m Module, argsPipe *os.File) int {
	if len(os.Args) > 0 {
		SetProcessName(os.Args[0])
	}
	data, err := io.ReadAll(io.LimitReader(argsPipe, maxConfigBytes+1))
	argsPipe.Close()
	if err != nil || len(data) > maxConfigBytes {
		return ExitBadConfig
	}
	msg, err := jsonx.DecodeObject(data, false)
	if err != nil {
		return ExitBadConfig
	}
	args, _ := msg["args"].(map[string]any)
	if m.Background == nil {
		return ExitBadConfig
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go watchChildSignals(sigs, cancel)
	if err := m.Background(ctx, args); err != nil {
		return ExitFailed
	}
	return ExitOK
}

// childStopGrace is how long a spawned process may take to return after SIGTERM/SIGINT.
const childStopGrace = 2 * time.Second

// watchChildSignals is the goroutine that turns SIGTERM/SIGINT into the end of the
// Background context, so "kill PID" stops a fault the way it would stop the real daemon:
// a second signal, or childStopGrace later, ends the process regardless.
func watchChildSignals(sigs chan os.Signal, cancel context.CancelFunc) {
	s := <-sigs
	cancel()
	signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	time.Sleep(childStopGrace)
	code := 128 + 15
	if sig, ok := s.(syscall.Signal); ok {
		code = 128 + int(sig)
	}
	os.Exit(code)
}

// SetProcessName sets the kernel comm name (what ps -e, top and /proc/PID/comm show) of this
// process to the first 15 bytes of name: the calling thread through prctl(PR_SET_NAME), and
// every other thread of the process through /proc/self/task/TID/comm.
func SetProcessName(name string) {
	var buf [commLen]byte
	copy(buf[:commLen-1], name)
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_NAME, uintptr(unsafe.Pointer(&buf[0])), 0)
	comm := buf[:clen(buf[:])]
	tasks, _ := filepath.Glob("/proc/self/task/*/comm")
	for _, path := range tasks {
		_ = os.WriteFile(path, comm, 0)
	}
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}
