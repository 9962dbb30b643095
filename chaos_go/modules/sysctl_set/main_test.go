package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit"
)

func params(t *testing.T, raw string) kit.Params {
	t.Helper()
	p, err := tryParams(raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tryParams is params for goroutines other than the test's, which must not call t.Fatal.
func tryParams(raw string) (kit.Params, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return kit.Params{}, fmt.Errorf("bad test params %s: %w", raw, err)
	}
	p, err := kit.NewParams(declaration, m)
	if err != nil {
		return kit.Params{}, fmt.Errorf("NewParams(%s): %w", raw, err)
	}
	return p, nil
}

// fakeSysctl makes a sysctl tree in a temp dir with one key file.
func fakeSysctl(t *testing.T, rel, content string) (root, path string) {
	t.Helper()
	root = t.TempDir()
	path = filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, path
}

func TestKeyPathFollowsSysctlsDotAndSlashRules(t *testing.T) {
	cases := map[string]string{
		"net.ipv4.ip_forward":              "/r/net/ipv4/ip_forward",
		"net.ipv4.conf.eth0/100.rp_filter": "/r/net/ipv4/conf/eth0.100/rp_filter",
		"net/ipv4/conf/eth0.100/rp_filter": "/r/net/ipv4/conf/eth0.100/rp_filter",
		"kernel.pid_max":                   "/r/kernel/pid_max",
	}
	for key, want := range cases {
		if got, err := keyPath("/r", key); err != nil || got != want {
			t.Errorf("keyPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, bad := range []string{"net..ipv4", "net/../../etc/passwd", "kernel.", "a//b"} {
		if got, err := keyPath("/r", bad); err == nil {
			t.Errorf("keyPath(%q) = %q; want an error", bad, got)
		}
	}
}

func TestSysctlSetWritesTheValueAndRecordsTheOldOne(t *testing.T) {
	root, path := fakeSysctl(t, "net/ipv4/ip_local_port_range", "32768\t60999\n")
	r := kit.NewTestReport()
	p := params(t, `{"key": "net.ipv4.ip_local_port_range", "value": "1024 1030", "proc_sys": "`+root+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatalf("run: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "1024 1030\n" {
		t.Errorf("file = %q; want %q", b, "1024 1030\n")
	}
	res := r.Result()
	if res["before"] != "32768 60999" || res["after"] != "1024 1030" || res["path"] != path {
		t.Errorf("result = %v", res)
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Before != "32768 60999" || ch[0].Path != "net.ipv4.ip_local_port_range" {
		t.Fatalf("changes = %+v", ch)
	}
	want := [][]string{{"sysctl", "-w", "net.ipv4.ip_local_port_range=32768 60999"}}
	if got := ch[0].Detail["undo"]; !reflect.DeepEqual(got, want) {
		t.Errorf("undo = %q; want %q", got, want)
	}
}

func TestSysctlSetRefusesMissingKeysDirectoriesAndEscapes(t *testing.T) {
	root, _ := fakeSysctl(t, "kernel/pid_max", "4194304\n")
	outside := filepath.Join(filepath.Dir(root), "escaped")
	for _, c := range []struct{ key, want string }{
		{"kernel.no_such_key", "no such key"},
		{"kernel", "is a directory"},
		{"kernel/../../escaped", "bad name"},
	} {
		var m map[string]any
		json.Unmarshal([]byte(`{"key": "`+c.key+`", "value": "1", "proc_sys": "`+root+`"}`), &m)
		p, err := kit.NewParams(declaration, m)
		if err != nil {
			continue // the declaration's pattern refused it already
		}
		if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("key %q: run = %v; want an error containing %q", c.key, err, c.want)
		}
	}
	if _, err := os.Stat(outside); err == nil {
		t.Errorf("%s was created outside the sysctl root", outside)
	}
	if _, err := os.Stat(filepath.Join(root, "kernel", "no_such_key")); err == nil {
		t.Error("a missing key's file was created")
	}
}

// setnsSyscall numbers setns(2) per architecture; package syscall does not export it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// inNetns runs fn on an OS thread moved into the named namespace; /proc/sys/net
// as that thread opens it is the namespace's. The thread stays locked, so the
// runtime throws it away afterwards instead of reusing it in the wrong namespace.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		nr, ok := setnsSyscall[runtime.GOARCH]
		if !ok {
			errc <- fmt.Errorf("setns: unknown syscall number on %s", runtime.GOARCH)
			return
		}
		if _, _, e := syscall.RawSyscall(nr, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			errc <- fmt.Errorf("setns %s: %w", name, e)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

func TestSysctlSetChangesIPForwardInsideATestNamespaceOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	var b [4]byte
	rand.Read(b[:])
	ns := "chaosrun-t-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	hostBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}

	r := kit.NewTestReport()
	p := params(t, `{"key": "net.ipv4.ip_forward", "value": "1"}`)
	err = inNetns(ns, func() error { return run(context.Background(), p, r) })
	if err != nil {
		t.Fatalf("run in %s: %v", ns, err)
	}
	if res := r.Result(); res["before"] != "0" || res["after"] != "1" {
		t.Errorf("result = %v; want before 0 after 1 (a fresh namespace forwards nothing)", res)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("ip_forward in %s = %q, %v; want 1", ns, out, err)
	}
	if hostAfter, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(hostAfter) != string(hostBefore) {
		t.Errorf("host ip_forward changed from %q to %q", hostBefore, hostAfter)
	}
}
