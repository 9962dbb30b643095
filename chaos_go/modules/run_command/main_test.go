package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestRunCommandMakesTheChangeAndRecordsTheUndo(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "broken")
	rep := moduletest.MustRun(t, declaration, run, map[string]any{
		"command": "echo broken > " + marker + " && echo done",
		"undo":    "rm -f " + marker,
	})
	if data, err := os.ReadFile(marker); err != nil || string(data) != "broken\n" {
		t.Fatalf("the command's effect: %q, %v", data, err)
	}
	res := rep.Result()
	if res["exit_status"] != 0 || res["stdout"] != "done\n" || res["stderr"] != "" || res["truncated"] != false {
		t.Errorf("result %v", res)
	}
	changes := rep.Changes()
	if len(changes) != 1 || changes[0].Action != "run_command" {
		t.Fatalf("changes %+v", changes)
	}
	want := [][]string{{"/bin/sh", "-c", "rm -f " + marker}}
	if got := changes[0].Detail["undo"]; !reflect.DeepEqual(got, want) {
		t.Errorf("undo %v; want %v", got, want)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Error("the undo ran; it must only be recorded")
	}
}

func TestAFailingCommandFailsTheStepWithItsStatusAndStderrButIsStillRecorded(t *testing.T) {
	rep, err := moduletest.Run(t, declaration, run, map[string]any{"command": "echo 'no such unit' >&2; exit 3"})
	if err == nil || err.Error() != "command exited with status 3: no such unit" {
		t.Fatalf("err %v", err)
	}
	if rep.Result()["exit_status"] != 3 || len(rep.Changes()) != 1 {
		t.Errorf("result %v, changes %+v", rep.Result(), rep.Changes())
	}
	if _, ok := rep.Changes()[0].Detail["undo"]; ok {
		t.Error("no undo was given, none may be recorded")
	}
}

func TestACommandPastItsTimeoutIsKilledAndFailsTheStep(t *testing.T) {
	_, err := moduletest.Run(t, declaration, run, map[string]any{"command": "sleep 30", "timeout_ms": 200})
	if err == nil || !strings.HasPrefix(err.Error(), "command killed after 200ms (timeout_ms)") {
		t.Fatalf("err %v", err)
	}
}

func TestOutputIsCappedAtMaxOutput(t *testing.T) {
	res := moduletest.MustRun(t, declaration, run, map[string]any{"command": "head -c 10000 /dev/zero | tr '\\0' x", "max_output": 100}).Result()
	if len(res["stdout"].(string)) != 100 || res["truncated"] != true {
		t.Errorf("stdout %d bytes, truncated %v", len(res["stdout"].(string)), res["truncated"])
	}
}
