package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/procfs"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// sleeper is a process the test started; done delivers Wait's error.
type sleeper struct {
	cmd  *exec.Cmd
	done chan error
}

func startSleepers(t *testing.T, path string, n int) []*sleeper {
	t.Helper()
	var out []*sleeper
	for i := 0; i < n; i++ {
		cmd := exec.Command(path, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		s := &sleeper{cmd, make(chan error, 1)}
		go func() { s.done <- cmd.Wait() }()
		t.Cleanup(func() { cmd.Process.Kill() })
		out = append(out, s)
		time.Sleep(30 * time.Millisecond) // distinct start times (10 ms ticks)
	}
	return out
}

// waitSignal waits until s exits and returns the signal that ended it.
func (s *sleeper) waitSignal() (syscall.Signal, error) {
	select {
	case err := <-s.done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return 0, fmt.Errorf("wait: %v", err)
		}
		ws := ee.Sys().(syscall.WaitStatus)
		if !ws.Signaled() {
			return 0, fmt.Errorf("exited with %v, not by a signal", ws.ExitStatus())
		}
		return ws.Signal(), nil
	case <-time.After(5 * time.Second):
		return 0, errors.New("still running after 5s")
	}
}

func (s *sleeper) running() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return false
	case <-time.After(100 * time.Millisecond):
		return true
	}
}

func TestKillByNameSignalsOnlyTheOldestThenAllWithAll(t *testing.T) {
	path, name := kittest.UniqueSleep(t)
	ss := startSleepers(t, path, 3)

	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, want := r.Result()["killed"], []int{ss[0].cmd.Process.Pid}; !reflect.DeepEqual(got, want) {
		t.Errorf("killed = %v; want %v (the oldest)", got, want)
	}
	if got := r.Result()["matched"]; got != 3 {
		t.Errorf("matched = %v; want 3", got)
	}
	if sig, err := ss[0].waitSignal(); err != nil || sig != syscall.SIGTERM {
		t.Errorf("oldest sleeper: signal %v, %v; want SIGTERM", sig, err)
	}
	if !ss[1].running() || !ss[2].running() {
		t.Fatal("a younger sleeper died; want only the oldest signalled")
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Action != "signal_process" {
		t.Fatalf("changes = %+v", ch)
	}
	before := ch[0].Before.(map[string]any)
	if before["comm"] != name || before["pid"] != ss[0].cmd.Process.Pid {
		t.Errorf("before = %v; want comm %q pid %d", before, name, ss[0].cmd.Process.Pid)
	}
	if ch[0].Detail["exe"] != path {
		t.Errorf("exe = %v; want %q", ch[0].Detail["exe"], path)
	}

	r = kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"name": "`+name+`", "signal": "KILL", "all": true}`), r); err != nil {
		t.Fatalf("run all: %v", err)
	}
	want := []int{ss[1].cmd.Process.Pid, ss[2].cmd.Process.Pid}
	if got := r.Result()["killed"]; !reflect.DeepEqual(got, want) {
		t.Errorf("killed = %v; want %v", got, want)
	}
	for _, s := range ss[1:] {
		if sig, err := s.waitSignal(); err != nil || sig != syscall.SIGKILL {
			t.Errorf("sleeper %d: signal %v, %v; want SIGKILL", s.cmd.Process.Pid, sig, err)
		}
	}

	err := run(context.Background(), moduletest.Params(t, declaration, `{"name": "`+name+`"}`), kit.NewTestReport())
	if err == nil || !strings.Contains(err.Error(), "no process named") {
		t.Errorf("run with nothing left = %v; want 'no process named'", err)
	}
}

func TestStopByPidRecordsHowToContinueIt(t *testing.T) {
	path, name := kittest.UniqueSleep(t)
	s := startSleepers(t, path, 1)[0]
	pid := s.cmd.Process.Pid
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, fmt.Sprintf(`{"pid": %d, "name": %q, "signal": "STOP"}`, pid, name)), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		p, err := procfs.Read("/proc", pid)
		if err == nil && p.State == "T" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d state %q; want T (stopped)", pid, p.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
	undo := r.Changes()[0].Detail["undo"].([][]string)
	if want := [][]string{{"kill", "-CONT", fmt.Sprint(pid)}}; !reflect.DeepEqual(undo, want) {
		t.Errorf("undo = %q; want %q", undo, want)
	}
}

func TestNeverSignalsItselfItsParentOrAMismatchedPid(t *testing.T) {
	for _, c := range []struct{ raw, want string }{
		{fmt.Sprintf(`{"pid": %d}`, os.Getpid()), "it is this process"},
		{fmt.Sprintf(`{"pid": %d}`, os.Getppid()), "parent"},
		{fmt.Sprintf(`{"pid": %d, "name": "certainly-not-this"}`, os.Getppid()), "not \"certainly-not-this\""},
		{fmt.Sprintf(`{"name": %q, "all": true}`, filepath.Base(os.Args[0])), "no process named"},
		{`{"signal": "KILL"}`, "give name or pid"},
	} {
		err := run(context.Background(), moduletest.Params(t, declaration, c.raw), kit.NewTestReport())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%s) = %v; want an error containing %q", c.raw, err, c.want)
		}
	}
}
