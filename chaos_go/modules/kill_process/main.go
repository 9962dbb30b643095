// Command kill_process sends a signal to a process picked by name or pid.
package main

import (
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
	"chaosrun/chaos_go/kit/procfs"
)

//go:embed params.schema.json
var declaration []byte

var signals = map[string]syscall.Signal{
	"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "HUP": syscall.SIGHUP,
	"INT": syscall.SIGINT, "QUIT": syscall.SIGQUIT, "STOP": syscall.SIGSTOP,
	"CONT": syscall.SIGCONT, "USR1": syscall.SIGUSR1, "USR2": syscall.SIGUSR2,
}

// protected says why pid must not be signalled, or "" when it may be.
func protected(p procfs.Process) string {
	switch {
	case p.PID == os.Getpid():
		return "it is this process"
	case p.PID == os.Getppid():
		return "it is this process's parent"
	case p.PID == 1:
		return "it is init"
	case p.Kthread:
		return "it is a kernel thread"
	case p.Exited():
		return "it has already exited"
	}
	return ""
}

// pickTargets chooses the processes to signal: by pid, or the matches for name
// (oldest first; only the oldest unless all).
func pickTargets(procDir, name string, pid int, all bool) (targets []procfs.Process, matched int, err error) {
	if pid > 0 {
		p, err := procfs.Read(procDir, pid)
		if err != nil {
			return nil, 0, fmt.Errorf("process %d: %w", pid, err)
		}
		if name != "" && !p.HasName(name) {
			return nil, 0, fmt.Errorf("process %d is %q, not %q", pid, p.Comm, name)
		}
		if why := protected(p); why != "" {
			return nil, 0, fmt.Errorf("will not signal process %d: %s", pid, why)
		}
		return []procfs.Process{p}, 1, nil
	}
	procs, err := procfs.List(procDir)
	if err != nil {
		return nil, 0, err
	}
	for _, p := range procs {
		if p.HasName(name) && protected(p) == "" {
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

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
