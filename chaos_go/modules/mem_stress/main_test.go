package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

// TestMain lets kit.Spawn re-execute this test binary as the memory process.
func TestMain(m *testing.M) {
	kit.RunIfChild(kit.Module{Background: background})
	os.Exit(m.Run())
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestMemStressHoldsResidentMemoryUnderItsNameUntilSIGTERM(t *testing.T) {
	name := kittest.UniqueName("memhog")
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"size_mb": 64, "duration": 30, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid, _ := r.Result()["pid"].(int)
	if pid <= 0 {
		t.Fatalf("pid = %#v", r.Result()["pid"])
	}
	kittest.KillAtCleanup(t, pid, name)
	if got := kittest.Comm(pid); got != name {
		t.Errorf("comm = %q; want %q", got, name)
	}
	if rss, _ := r.Result()["rss_mb"].(int64); rss < 64 {
		t.Errorf("rss_mb = %v; want at least 64", r.Result()["rss_mb"])
	}
	status, err := readMeminfo(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	if rss := status["VmRSS"] >> 10; rss < 64 {
		t.Errorf("VmRSS = %d MB; want >= 64 (64 MB touched)", rss)
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Action != "spawn_process" || ch[0].Detail["size_mb"] != int64(64) {
		t.Errorf("changes = %+v", ch)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if !kittest.WaitGone(pid, 3*time.Second) {
		t.Errorf("memory process %d still runs 3s after SIGTERM", pid)
	}
}

func TestMemStressReleasesMemoryWhenTheDurationEnds(t *testing.T) {
	name := kittest.UniqueName("memhog")
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, `{"size_mb": 8, "duration": 1, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid := r.Result()["pid"].(int)
	kittest.KillAtCleanup(t, pid, name)
	if !kittest.WaitGone(pid, 4*time.Second) {
		t.Errorf("memory process %d still runs 4s after a 1s duration", pid)
	}
}

func TestMemStressRefusesMoreThanTheMachineHas(t *testing.T) {
	mem, err := readMeminfo("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf(`{"size_mb": %d, "process_name": "%s"}`, mem["MemTotal"]>>10+1, kittest.UniqueName("memhog"))
	r := kit.NewTestReport()
	err = run(context.Background(), moduletest.Params(t, declaration, raw), r)
	if err == nil || !strings.Contains(err.Error(), "MB of memory") {
		t.Fatalf("run = %v; want a refusal naming the machine's memory", err)
	}
	if len(r.Changes()) != 0 {
		t.Errorf("changes = %+v; want none", r.Changes())
	}
}
