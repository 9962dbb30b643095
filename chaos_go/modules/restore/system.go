package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/mounts"
	"chaosrun/chaos_go/kit/procfs"
	"chaosrun/chaos_go/kit/sysexec"
	"chaosrun/chaos_go/kit/systemd"
)

// runArgv runs one command of a record (its tool looked up on PATH when not absolute).
func runArgv(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return nil
	}
	tool, err := sysexec.LookTool(argv[0], argv[0])
	if err != nil {
		return err
	}
	_, stderr, err := sysexec.Run(ctx, append([]string{tool}, argv[1:]...), "")
	if err != nil {
		return fmt.Errorf("%w: %s", err, sysexec.OneLine(stderr))
	}
	return nil
}

func output(ctx context.Context, argv ...string) (string, error) {
	tool, err := sysexec.LookTool(argv[0], argv[0])
	if err != nil {
		return "", err
	}
	out, stderr, err := sysexec.Run(ctx, append([]string{tool}, argv[1:]...), "")
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, sysexec.OneLine(stderr))
	}
	return out, nil
}

func undoSysctl(ctx context.Context, c change) outcome {
	before, kept := c.Before.(string)
	if !kept {
		return outcome{irreversible, "the value before was not readable"}
	}
	proc := "/proc/sys/" + strings.ReplaceAll(c.Path, ".", "/")
	data, err := os.ReadFile(proc)
	if err != nil {
		return since("%v", err)
	}
	now := strings.Join(strings.Fields(string(data)), " ")
	switch now {
	case strings.Join(strings.Fields(before), " "):
		return was("%s is %s", c.Path, now)
	case strings.Join(strings.Fields(str(c.After)), " "):
	default:
		return since("%s is %s now, not the run's %s", c.Path, now, str(c.After))
	}
	if err := os.WriteFile(proc, []byte(before+"\n"), 0o644); err != nil {
		return broke("write %s: %v", proc, err)
	}
	return did("%s %s -> %s", c.Path, now, before)
}

// undoRule deletes a firewall rule block_port added, and the table (or chain) it made for
// it once empty.
func undoRule(ctx context.Context, c change) outcome {
	undo := argvs(c.Detail["undo"])
	if len(undo) != 1 {
		return outcome{irreversible, "the record has no undo command"}
	}
	if c.Action == "iptables_insert_rule" {
		check := append([]string{}, undo[0]...)
		for i, a := range check {
			if a == "-D" {
				check[i] = "-C"
			}
		}
		if runArgv(ctx, check) != nil {
			return was("the rule is gone")
		}
		return runUndo(ctx, undo)
	}
	family, table, chain := str(c.Detail["family"]), str(c.Detail["table"]), str(c.Detail["chain"])
	handle := fmt.Sprintf("# handle %d", int64(num(c.Detail["handle"])))
	listing, err := output(ctx, "nft", "-a", "list", "chain", family, table, chain)
	if err != nil || !hasRuleLine(listing, handle) {
		return was("the rule (%s) is gone", handle[2:])
	}
	o := runUndo(ctx, undo)
	if o.Status != restored {
		return o
	}
	before := obj(c.Before)
	switch {
	case before["table_existed"] == false:
		if all, err := output(ctx, "nft", "-a", "list", "table", family, table); err == nil && !hasRuleLine(all, "# handle") {
			if err := runArgv(ctx, []string{"nft", "delete", "table", family, table}); err == nil {
				o.Message += "; removed the table it made"
			}
		}
	case before["chain_existed"] == false:
		if listing, err := output(ctx, "nft", "-a", "list", "chain", family, table, chain); err == nil && !hasRuleLine(listing, "# handle") {
			if err := runArgv(ctx, []string{"nft", "delete", "chain", family, table, chain}); err == nil {
				o.Message += "; removed the chain it made"
			}
		}
	}
	return o
}

// hasRuleLine says whether nft -a output has a rule (not a table or chain line) whose
// handle comment contains mark.
func hasRuleLine(listing, mark string) bool {
	for _, line := range strings.Split(listing, "\n") {
		if strings.Contains(line, "{") {
			continue
		}
		if i := strings.Index(line, "# handle"); i >= 0 && strings.HasPrefix(line[i:]+" ", mark+" ") {
			return true
		}
	}
	return false
}

func undoQdisc(ctx context.Context, c change) outcome {
	shown, err := output(ctx, "tc", "qdisc", "show", "dev", c.Path, "root")
	if err != nil {
		return since("%v", err)
	}
	if !strings.Contains(shown, "netem") {
		return was("%s has no netem qdisc", c.Path)
	}
	return runUndo(ctx, argvs(c.Detail["undo"]))
}

// mountAgain mounts each mount point whose fstab entry is back and that is not mounted
// (it was before the fault; a reboot since found the broken entry).
func mountAgain(ctx context.Context, points []string, r *kit.Report) {
	if len(points) == 0 {
		return
	}
	ms, err := mounts.Read("/proc/self/mountinfo")
	if err != nil {
		r.Warnf("cannot see the mounts: %v", err)
		return
	}
	for _, mp := range points {
		if _, mounted := mounts.At(ms, mp); mounted {
			continue
		}
		if err := runArgv(ctx, []string{"mount", mp}); err != nil {
			r.Warnf("mount %s: %v", mp, err)
		} else {
			r.Logf("mounted %s again", mp)
		}
	}
}

func undoRemount(ctx context.Context, c change) outcome {
	ms, err := mounts.Read("/proc/self/mountinfo")
	if err != nil {
		return broke("%v", err)
	}
	m, ok := mounts.At(ms, c.Path)
	if !ok {
		return since("%s is not mounted", c.Path)
	}
	if !m.ReadOnly() {
		return was("%s is read-write", c.Path)
	}
	return runUndo(ctx, argvs(c.Detail["undo"]))
}

// undoSignal continues a process kill_process stopped; a signal that ended a process
// leaves nothing to undo.
func undoSignal(c change) outcome {
	before := obj(c.Before)
	pid, start := int(num(before["pid"])), uint64(num(before["start_ticks"]))
	if str(c.After) != "SIGSTOP" {
		return was("%s to pid %d leaves nothing to undo", str(c.After), pid)
	}
	p, err := procfs.Read("/proc", pid)
	if err != nil || p.Start != start {
		return was("pid %d is no longer running", pid)
	}
	if p.State != "T" {
		return was("pid %d runs", pid)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return broke("kill -CONT %d: %v", pid, err)
	}
	return did("pid %d continued", pid)
}

func isUnitState(action string) bool { return strings.HasPrefix(action, "systemctl_") }

// undoUnitState runs a unit's undo commands unless the unit is as it was before.
func undoUnitState(ctx context.Context, c change) outcome {
	undo := argvs(c.Detail["undo"])
	before := obj(c.Before)
	if len(undo) > 0 && len(before) > 0 {
		same := true
		for key, verb := range map[string]string{"active": "is-active", "enabled": "is-enabled"} {
			if want, ok := before[key].(string); ok {
				now, _ := systemd.State(ctx, undo[0][0], verb, c.Path)
				same = same && now == want
			}
		}
		if same {
			return was("%s is as before", c.Path)
		}
	}
	if len(undo) == 0 {
		return was("%s: nothing to undo", c.Path)
	}
	return runUndo(ctx, undo)
}

// faultProcess is a running process of the run: recorded by pid and start time, or found
// by its executable.
type faultProcess struct {
	pid  int
	name string
	step string
}

// stopFaultProcesses stops (SIGTERM, then SIGKILL after 5 s) every process whose deleted
// executable is one of binaries ("sha256:size"), and the recorded ones still running with
// their recorded start time. It returns what it stopped and, by pid, "stopped" or
// "failed: ...".
func stopFaultProcesses(ctx context.Context, binaries []string, changes []change, r *kit.Report) ([]map[string]any, map[int]string) {
	marks := map[string]bool{}
	sizes := map[int64]bool{}
	for _, b := range binaries {
		digest, size, _ := strings.Cut(b, ":")
		n, _ := strconv.ParseInt(size, 10, 64)
		marks[digest], sizes[n] = true, true
	}
	steps := map[int]string{}
	found := map[int]faultProcess{}
	for _, c := range changes {
		if c.Action != "spawn_process" {
			continue
		}
		pid, start := recordedPID(c)
		steps[pid] = c.Step
		p, err := procfs.Read("/proc", pid)
		if err == nil && !p.Exited() && (start == 0 || p.Start == start) && (len(marks) == 0 || runsOneOf(pid, marks, sizes)) {
			found[pid] = faultProcess{pid, p.Comm, c.Step}
		}
	}
	if len(marks) > 0 {
		all, _ := procfs.List("/proc")
		for _, p := range all {
			if _, seen := found[p.PID]; !seen && p.PID != os.Getpid() && !p.Exited() && runsOneOf(p.PID, marks, sizes) {
				found[p.PID] = faultProcess{p.PID, p.Comm, steps[p.PID]}
			}
		}
	}
	status := map[int]string{}
	var stopped []map[string]any
	if len(found) == 0 {
		return stopped, status
	}
	for pid := range found {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	left := waitGone(ctx, found, 5*time.Second)
	for pid := range left {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	left = waitGone(ctx, left, 2*time.Second)
	for pid, p := range found {
		how := "stopped"
		if _, still := left[pid]; still {
			how = "failed: still running after SIGKILL"
		}
		status[pid] = how
		stopped = append(stopped, map[string]any{"pid": pid, "name": p.name, "step": p.step, "status": how})
		r.Logf("fault process %d (%s): %s", pid, p.name, how)
	}
	return stopped, status
}

func recordedPID(c change) (int, uint64) {
	for _, m := range []map[string]any{obj(c.After), c.Detail} {
		if pid := int(num(m["pid"])); pid > 0 {
			return pid, uint64(num(m["start_ticks"]))
		}
	}
	return 0, 0
}

// runsOneOf says whether the process's executable is deleted and is one of the marks.
func runsOneOf(pid int, marks map[string]bool, sizes map[int64]bool) bool {
	exe := filepath.Join("/proc", strconv.Itoa(pid), "exe")
	link, err := os.Readlink(exe)
	if err != nil || !strings.HasSuffix(link, " (deleted)") {
		return false
	}
	f, err := os.Open(exe)
	if err != nil {
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !sizes[st.Size()] {
		return false
	}
	data, err := io.ReadAll(f)
	return err == nil && marks[digestOf(data)]
}

func waitGone(ctx context.Context, procs map[int]faultProcess, within time.Duration) map[int]faultProcess {
	deadline := time.Now().Add(within)
	for {
		left := map[int]faultProcess{}
		for pid, p := range procs {
			if q, err := procfs.Read("/proc", pid); err == nil && !q.Exited() {
				left[pid] = p
			}
		}
		if len(left) == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func processOutcome(c change, status map[int]string) outcome {
	pid, _ := recordedPID(c)
	switch how := status[pid]; {
	case how == "stopped":
		return did("pid %d stopped", pid)
	case how != "":
		return broke("pid %d: %s", pid, how)
	}
	return was("pid %d is no longer running", pid)
}
