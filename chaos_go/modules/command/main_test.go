package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestCommandReportsExitStatusAndBothStreams(t *testing.T) {
	res := moduletest.Probe(t, declaration, run, map[string]any{"command": "echo out; echo err >&2; exit 3"})
	if res["exit_status"] != 3 || res["stdout"] != "out\n" || res["stderr"] != "err\n" || res["timed_out"] != false || res["truncated"] != false || res["signal"] != "" {
		t.Errorf("result %v", res)
	}
	if res := moduletest.Probe(t, declaration, run, map[string]any{"command": "true"}); res["exit_status"] != 0 {
		t.Errorf("true: exit_status %v; want 0", res["exit_status"])
	}
}

func TestCommandKeepsOnlyMaxOutputBytes(t *testing.T) {
	res := moduletest.Probe(t, declaration, run, map[string]any{"command": "head -c 100000 /dev/zero | tr '\\0' a", "max_output": 10})
	if res["stdout"] != "aaaaaaaaaa" || res["truncated"] != true || res["exit_status"] != 0 {
		t.Errorf("result %v; want 10 a's, truncated", res)
	}
	// A cap inside a multi-byte character keeps only whole characters.
	res = moduletest.Probe(t, declaration, run, map[string]any{"command": "printf 'aéé'", "max_output": 4})
	if s := res["stdout"].(string); s != "aé" || !utf8.ValidString(s) {
		t.Errorf("stdout %q; want %q", s, "aé")
	}
}

func TestCommandKillsTheWholeGroupAtItsTimeout(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	start := time.Now()
	res := moduletest.Probe(t, declaration, run, map[string]any{"command": "sleep 30 & echo $! > " + pidFile + "; sleep 30", "timeout_ms": 300})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v; want about the 300 ms timeout", took)
	}
	if res["timed_out"] != true || res["exit_status"] != -1 || res["signal"] != "killed" {
		t.Errorf("result %v; want timed out, killed", res)
	}
	assertGone(t, pidFile)
}

func TestCommandLeavesNothingRunningBehind(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	start := time.Now()
	res := moduletest.Probe(t, declaration, run, map[string]any{"command": "sleep 30 & echo $! > " + pidFile + "; echo started"})
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v; a background child holding stdout must not stall the probe", took)
	}
	if res["exit_status"] != 0 || res["stdout"] != "started\n" || res["timed_out"] != false {
		t.Errorf("result %v", res)
	}
	assertGone(t, pidFile)
}

// assertGone checks that the pid written to pidFile no longer runs.
func assertGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(2 * time.Second)
	for {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("background process %d still runs after the probe returned", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCommandDoesNotWaitForAnEscapedProcessHoldingItsOutput(t *testing.T) {
	pidFile := t.TempDir() + "/pid"
	t.Cleanup(func() {
		if b, err := os.ReadFile(pidFile); err == nil {
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	start := time.Now()
	res := moduletest.Probe(t, declaration, run, map[string]any{"command": "setsid sh -c 'echo $$ > " + pidFile + "; exec sleep 5' & sleep 0.2; echo done"})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("took %v; a process outside the group holding stdout must not stall the probe", took)
	}
	if res["exit_status"] != 0 || res["stdout"] != "done\n" {
		t.Errorf("result %v", res)
	}
}
