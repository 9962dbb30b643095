// Command kill_process sends a signal to a process picked by name or pid.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "HUP": syscall.SIGHUP,
	"INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "STOP": syscall.SIGSTOP,
	"CONT": syscall.SIGCONT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// pfKthread is PF_KTHREAD in /proc/PID/stat's flags: signals to kernel threads
// do nothing, so they never match.
const pfKthread = 0x00200000

// process is what /proc says about one process.
type process struct {
	PID     int
	PPID    int
	Comm    string
	Cmdline []string
	State   string
	Start   uint64 // clock ticks after boot
	Kthread bool
}

// readProcess parses procDir/PID/stat and cmdline. comm may hold spaces and
// parentheses, so it is cut at the last ')'.
func readProcess(procDir string, pid int) (process, error) {
	dir := filepath.Join(procDir, strconv.Itoa(pid))
	stat, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return process{}, err
	}
	open, end := bytes.IndexByte(stat, '('), bytes.LastIndexByte(stat, ')')
	if open < 0 || end < open {
		return process{}, fmt.Errorf("parse %s/stat: no comm", dir)
	}
	fields := strings.Fields(string(stat[end+1:])) // fields[0] is stat field 3
	if len(fields) < 20 {
		return process{}, fmt.Errorf("parse %s/stat: %d fields", dir, len(fields)+2)
	}
	ppid, _ := strconv.Atoi(fields[1])
	flags, _ := strconv.ParseUint(fields[6], 10, 64)
	start, _ := strconv.ParseUint(fields[19], 10, 64)
	p := process{PID: pid, PPID: ppid, Comm: string(stat[open+1 : end]), State: fields[0], Start: start, Kthread: flags&pfKthread != 0}
	if raw, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil && len(raw) > 0 {
		p.Cmdline = strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	}
	return p, nil
}

// hasName says whether name is the process's comm, its argv[0] or argv[0]'s
// basename ("nginx: master process /usr/sbin/nginx" has basename "nginx").
func (p process) hasName(name string) bool {
	if p.Comm == name {
		return true
	}
	if len(p.Cmdline) == 0 {
		return false
	}
	return p.Cmdline[0] == name || filepath.Base(p.Cmdline[0]) == name
}

// listProcesses reads every process in procDir; ones that exit meanwhile are skipped.
func listProcesses(procDir string) ([]process, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var procs []process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		if p, err := readProcess(procDir, pid); err == nil {
			procs = append(procs, p)
		}
	}
	return procs, nil
}

// protected says why pid must not be signalled, or "" when it may be.
func protected(p process) string {
	switch {
	case p.PID == os.Getpid():
		return "it is this process"
	case p.PID == os.Getppid():
		return "it is this process's parent"
	case p.PID == 1:
		return "it is init"
	case p.Kthread:
		return "it is a kernel thread"
	case p.State == "Z" || p.State == "X":
		return "it has already exited"
	}
	return ""
}

// pickTargets chooses the processes to signal: by pid, or the matches for name
// (oldest first; only the oldest unless all).
func pickTargets(procDir, name string, pid int, all bool) (targets []process, matched int, err error) {
	if pid > 0 {
		p, err := readProcess(procDir, pid)
		if err != nil {
			return nil, 0, fmt.Errorf("process %d: %w", pid, err)
		}
		if name != "" && !p.hasName(name) {
			return nil, 0, fmt.Errorf("process %d is %q, not %q", pid, p.Comm, name)
		}
		if why := protected(p); why != "" {
			return nil, 0, fmt.Errorf("will not signal process %d: %s", pid, why)
		}
		return []process{p}, 1, nil
	}
	procs, err := listProcesses(procDir)
	if err != nil {
		return nil, 0, err
	}
	for _, p := range procs {
		if p.hasName(name) && protected(p) == "" {
			targets = append(targets, p)
		}
	}
	if len(targets) == 0 {
		return nil, 0, fmt.Errorf("no process named %q", name)
	}
	sort.Slice(targets, func(i, j int) bool {
		if targets[i].Start != targets[j].Start {
			return targets[i].Start < targets[j].Start
		}
		return targets[i].PID < targets[j].PID
	})
	matched = len(targets)
	if !all {
		targets = targets[:1]
	}
	return targets, matched, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	name, all, procDir := p.String("name"), p.Bool("all"), p.String("proc_dir")
	pid := 0
	if p.Has("pid") {
		pid = int(p.Int("pid"))
	}
	if name == "" && pid == 0 {
		return errors.New("give name or pid")
	}
	sigName := p.String("signal")
	sig, ok := signals[sigName]
	if !ok {
		return fmt.Errorf("unknown signal %q", sigName)
	}
	targets, matched, err := pickTargets(procDir, name, pid, all)
	if err != nil {
		return err
	}
	killed := []int{}
	var failures []string
	for _, t := range targets {
		// Read before the signal: a killed process's exe link is gone at once.
		detail := map[string]any{"signal": sigName}
		if exe, err := os.Readlink(filepath.Join(procDir, strconv.Itoa(t.PID), "exe")); err == nil {
			detail["exe"] = exe
		}
		if err := syscall.Kill(t.PID, sig); err != nil {
			failures = append(failures, fmt.Sprintf("%d: %v", t.PID, err))
			continue
		}
		killed = append(killed, t.PID)
		r.Logf("sent SIG%s to %d (%s)", sigName, t.PID, t.Comm)
		if sigName == "STOP" {
			detail["undo"] = [][]string{{"kill", "-CONT", strconv.Itoa(t.PID)}}
		}
		r.Changed(kit.Change{
			Action: "signal_process",
			Before: map[string]any{"pid": t.PID, "ppid": t.PPID, "comm": t.Comm, "cmdline": t.Cmdline, "start_ticks": t.Start},
			After:  "SIG" + sigName,
			Detail: detail,
		})
	}
	r.Set("killed", killed)
	r.Set("matched", matched)
	r.Set("signal", sigName)
	if len(killed) == 0 {
		return fmt.Errorf("send SIG%s: %s", sigName, strings.Join(failures, "; "))
	}
	for _, f := range failures {
		r.Warnf("send SIG%s to %s", sigName, f)
	}
	return nil
}

func main() {
	kit.Main(kit.Module{Name: "kill_process", Kind: kit.Chaos, Declaration: declaration, Run: run})
}
