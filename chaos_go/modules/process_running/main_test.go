package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
)

func probe(t *testing.T, name string) map[string]any {
	t.Helper()
	p, err := kit.NewParams(declaration, map[string]any{"name": name})
	if err != nil {
		t.Fatalf("NewParams: %v", err)
	}
	r := kit.NewTestReport()
	if err := run(context.Background(), p, r); err != nil {
		t.Fatalf("run(%s): %v", name, err)
	}
	return r.Result()
}

// uniqueSleep copies sleep to a temp file with a name no other process has.
func uniqueSleep(t *testing.T) (path, name string) {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	name = "slp" + hex.EncodeToString(b[:])
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	data, _ := os.ReadFile(src)
	path = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, name
}

func TestProcessRunningCountsLiveProcessesByName(t *testing.T) {
	path, name := uniqueSleep(t)
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
