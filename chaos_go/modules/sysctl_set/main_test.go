package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

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
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_local_port_range", "value": "1024 1030", "proc_sys": "`+root+`"}`)
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
		p, err := moduletest.ParseParams(declaration, `{"key": "`+c.key+`", "value": "1", "proc_sys": "`+root+`"}`)
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

func TestSysctlSetChangesIPForwardInsideATestNamespaceOnly(t *testing.T) {
	ns := netnstest.New(t)
	hostBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}

	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_forward", "value": "1"}`)
	err = netnstest.Run(ns, func() error { return run(context.Background(), p, r) })
	if err != nil {
		t.Fatalf("run in %s: %v", ns, err)
	}
	if res := r.Result(); res["before"] != "0" || res["after"] != "1" {
		t.Errorf("result = %v; want before 0 after 1 (a fresh namespace forwards nothing)", res)
	}
	out, err := netnstest.Command(ns, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("ip_forward in %s = %q, %v; want 1", ns, out, err)
	}
	if hostAfter, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(hostAfter) != string(hostBefore) {
		t.Errorf("host ip_forward changed from %q to %q", hostBefore, hostAfter)
	}
}
