package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
)

// TestMain lets kit.Spawn re-execute this test binary as the memory process.
func TestMain(m *testing.M) {
	kit.RunIfChild(module)
	os.Exit(m.Run())
}

func params(t *testing.T, raw string) kit.Params {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatalf("bad test params %s: %v", raw, err)
	}
	p, err := kit.NewParams(declaration, m)
	if err != nil {
		t.Fatalf("NewParams(%s): %v", raw, err)
	}
	return p
}

func uniqueName(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

func gone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if _, rest := splitStat(string(b)); len(rest) > 0 && rest[0] == "Z" {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func TestMemStressHoldsResidentMemoryUnderItsNameUntilSIGTERM(t *testing.T) {
	name := uniqueName("memhog")
	r := kit.NewTestReport()
	if err := run(context.Background(), params(t, `{"size_mb": 64, "duration": 30, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid, _ := r.Result()["pid"].(int)
	if pid <= 0 {
		t.Fatalf("pid = %#v", r.Result()["pid"])
	}
	t.Cleanup(func() {
		if comm(pid) == name {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if got := comm(pid); got != name {
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
	if !gone(pid, 3*time.Second) {
		t.Errorf("memory process %d still runs 3s after SIGTERM", pid)
	}
}

func TestMemStressReleasesMemoryWhenTheDurationEnds(t *testing.T) {
	name := uniqueName("memhog")
	r := kit.NewTestReport()
	if err := run(context.Background(), params(t, `{"size_mb": 8, "duration": 1, "process_name": "`+name+`"}`), r); err != nil {
		t.Fatalf("run: %v", err)
	}
	pid := r.Result()["pid"].(int)
	t.Cleanup(func() {
		if comm(pid) == name {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	if !gone(pid, 4*time.Second) {
		t.Errorf("memory process %d still runs 4s after a 1s duration", pid)
	}
}

func TestMemStressRefusesMoreThanTheMachineHas(t *testing.T) {
	mem, err := readMeminfo("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	raw := fmt.Sprintf(`{"size_mb": %d, "process_name": "%s"}`, mem["MemTotal"]>>10+1, uniqueName("memhog"))
	r := kit.NewTestReport()
	err = run(context.Background(), params(t, raw), r)
	if err == nil || !strings.Contains(err.Error(), "MB of memory") {
		t.Fatalf("run = %v; want a refusal naming the machine's memory", err)
	}
	if len(r.Changes()) != 0 {
		t.Errorf("changes = %+v; want none", r.Changes())
	}
}
