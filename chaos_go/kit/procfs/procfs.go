// Package procfs reads processes from /proc, or from a directory laid out like it (the
// proc_dir parameter of kill_process and process_running, a fake one in tests): the
// fields of /proc/PID/stat and cmdline that modules use, and waiting for a process that
// kit.Spawn started to show its name.
package procfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CommMax is how many bytes of a name the kernel keeps as a process's comm (what ps -e,
// top and /proc/PID/comm show).
const CommMax = 15

// pfKthread is PF_KTHREAD in /proc/PID/stat's flags.
const pfKthread = 0x00200000

// Process is what /proc says about one process.
type Process struct {
	PID     int
	PPID    int
	Comm    string
	Cmdline []string // nil for a kernel thread or a zombie
	State   string   // "R", "S", "D", "T", "Z", ...
	Start   uint64   // start time in clock ticks after boot: tells a process from a later one reusing its pid
	Kthread bool     // a kernel thread: signals to it do nothing
}

// SplitStat cuts the text of /proc/PID/stat ("PID (COMM) STATE PPID ...") into comm and
// the fields after it, rest[0] being the state (field 3 of proc(5)). comm may hold spaces
// and parentheses, so it ends at the last ')'. ok is false when there is no comm.
func SplitStat(stat string) (comm string, rest []string, ok bool) {
	open, end := strings.IndexByte(stat, '('), strings.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return "", nil, false
	}
	return stat[open+1 : end], strings.Fields(stat[end+1:]), true
}

// Read parses procDir/PID/stat and cmdline. The error is the file system's when the
// process is gone.
func Read(procDir string, pid int) (Process, error) {
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return Process{}, err
	}
	comm, fields, ok := SplitStat(string(stat)) // fields[0] is stat field 3
	if !ok {
		return Process{}, fmt.Errorf("parse %s/stat: no comm", dir)
	}
	if len(fields) < 20 {
		return Process{}, fmt.Errorf("parse %s/stat: %d fields", dir, len(fields)+2)
	}
	ppid, _ := strconv.Atoi(fields[1])
	flags, _ := strconv.ParseUint(fields[6], 10, 64)
	start, _ := strconv.ParseUint(fields[19], 10, 64)
	p := Process{PID: pid, PPID: ppid, Comm: comm, State: fields[0], Start: start, Kthread: flags&pfKthread != 0}
	if raw, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(raw) > 0 {
		p.Cmdline = strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	}
	return p, nil
}

// State returns the state letter of process pid ("R", "S", "Z", ...) from procDir/PID/stat
// alone: cheaper than Read when that is all a module needs. The error is the file
// system's when the process is gone.
func State(procDir string, pid int) (string, error) {
	stat, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return "", err
	}
	if _, rest, ok := SplitStat(string(stat)); ok && len(rest) > 0 {
		return rest[0], nil
	}
	return "", fmt.Errorf("parse %s/%d/stat: no state", procDir, pid)
}

// List reads every process in procDir; ones that exit meanwhile are skipped.
func List(procDir string) ([]Process, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var procs []Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		if p, err := Read(procDir, pid); err == nil {
			procs = append(procs, p)
		}
	}
	return procs, nil
}

// HasName says whether name is the process's comm, its argv[0] or argv[0]'s basename
// ("nginx: master process /usr/sbin/nginx" has basename "nginx").
func (p Process) HasName(name string) bool {
	if p.Comm == name {
		return true
	}
	if len(p.Cmdline) == 0 {
		return false
	}
	return p.Cmdline[0] == name || filepath.Base(p.Cmdline[0]) == name
}

// Exited says whether the process has exited and only waits to be reaped (a zombie, or
// dead).
func (p Process) Exited() bool {
	return p.State == "Z" || p.State == "X"
}

// pollInterval is how often WaitNamed looks at the process.
const pollInterval = 10 * time.Millisecond

// WaitNamed waits up to timeout until process pid shows comm name, cut to CommMax bytes
// as the kernel does (a process started by kit.Spawn sets it first thing), and returns
// its start time in clock ticks after boot, which tells this process apart from a later
// one reusing the pid. The process exiting first is an error "process PID exited at once".
func WaitNamed(ctx context.Context, procDir string, pid int, name string, timeout time.Duration) (start uint64, err error) {
	want := name
	if len(want) > CommMax {
		want = want[:CommMax]
	}
	stat := filepath.Join(procDir, strconv.Itoa(pid), "stat")
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(stat)
		if err != nil {
			return 0, fmt.Errorf("process %d exited at once", pid)
		}
		comm, rest, _ := SplitStat(string(b))
		if len(rest) > 19 && rest[0] == "Z" {
			return 0, fmt.Errorf("process %d exited at once", pid)
		}
		if comm == want && len(rest) > 19 {
			return strconv.ParseUint(rest[19], 10, 64)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("process %d is still %q after %s; want %q", pid, comm, timeout, want)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// WaitHolding waits until process pid has a descriptor whose link is target (a path, or
// "PATH (deleted)" for a file it unlinked) and returns that descriptor's /proc path. The
// process exiting first is an error; timeout 0 waits as long as ctx lets it.
func WaitHolding(ctx context.Context, procDir string, pid int, target string, timeout time.Duration) (string, error) {
	fdDir := filepath.Join(procDir, strconv.Itoa(pid), "fd")
	deadline := time.Now().Add(timeout)
	for {
		entries, err := os.ReadDir(fdDir)
		if err != nil {
			return "", fmt.Errorf("process %d ended before holding %s", pid, target)
		}
		for _, e := range entries {
			fd := filepath.Join(fdDir, e.Name())
			if link, _ := os.Readlink(fd); link == target {
				return fd, nil
			}
		}
		if state, err := State(procDir, pid); err == nil && (state == "Z" || state == "X") {
			return "", fmt.Errorf("process %d exited before holding %s", pid, target)
		}
		if timeout > 0 && time.Now().After(deadline) {
			return "", fmt.Errorf("process %d did not open %s within %s", pid, target, timeout)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// userHZ is the unit of /proc's clock ticks (USER_HZ, 100 on every Linux architecture
// chaosrun builds for, whatever the kernel's own HZ).
const userHZ = 100

// StartedAt is when a process whose Start is start (clock ticks after boot) started: the
// boot time of procDir/stat's btime plus start. ok is false when btime cannot be read.
func StartedAt(procDir string, start uint64) (at time.Time, ok bool) {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, found := strings.CutPrefix(line, "btime "); found {
			boot, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return time.Time{}, false
			}
			return time.Unix(boot, 0).Add(time.Duration(start) * time.Second / userHZ), true
		}
	}
	return time.Time{}, false
}

// Holds says whether process pid has a descriptor whose link is target now (a path, or
// "PATH (deleted)").
func Holds(procDir string, pid int, target string) bool {
	fdDir := filepath.Join(procDir, strconv.Itoa(pid), "fd")
	entries, _ := os.ReadDir(fdDir)
	for _, e := range entries {
		if link, _ := os.Readlink(filepath.Join(fdDir, e.Name())); link == target {
			return true
		}
	}
	return false
}
