package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func probe(t *testing.T, name string) map[string]any {
	t.Helper()
	return moduletest.Probe(t, declaration, run, map[string]any{"name": name})
}

func TestProcessRunningCountsLiveProcessesByName(t *testing.T) {
	path, name := kittest.UniqueSleep(t)
	if res := probe(t, name); res["running"] != false || res["count"] != 0 || !reflect.DeepEqual(res["pids"], []int{}) {
		t.Errorf("before start: %v; want nothing running", res)
	}
	var cmds []*exec.Cmd
	for i := 0; i < 2; i++ {
		cmd := exec.Command(path, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		cmds = append(cmds, cmd)
	}
	want := []int{cmds[0].Process.Pid, cmds[1].Process.Pid}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	res := probe(t, name)
	if res["running"] != true || res["count"] != 2 || !reflect.DeepEqual(res["pids"], want) {
		t.Errorf("result %v; want running, 2, %v", res, want)
	}
	if res := probe(t, path); res["count"] != 2 {
		t.Errorf("by full argv[0]: count %v; want 2", res["count"])
	}

	// A killed but unreaped child is a zombie: not running.
	cmds[0].Process.Kill()
	for i := 0; i < 100; i++ {
		if probe(t, name)["count"] == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if res := probe(t, name); res["count"] != 1 || !reflect.DeepEqual(res["pids"], []int{cmds[1].Process.Pid}) {
		t.Errorf("after killing one: %v; want only %d", res, cmds[1].Process.Pid)
	}
}

func TestProcessRunningNeverCountsItself(t *testing.T) {
	self := filepath.Base(os.Args[0])
	for _, pid := range probe(t, self)["pids"].([]int) {
		if pid == os.Getpid() {
			t.Errorf("the probe counted itself (%s, pid %d)", self, pid)
		}
	}
}
