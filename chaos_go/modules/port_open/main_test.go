package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
)

func probe(t *testing.T, raw map[string]any) map[string]any {
	t.Helper()
	p, err := kit.NewParams(declaration, raw)
	if err != nil {
		t.Fatalf("NewParams: %v", err)
	}
	r := kit.NewTestReport()
	if err := run(context.Background(), p, r); err != nil {
		t.Fatalf("run(%v): %v", raw, err)
	}
	return r.Result()
}

func TestPortOpenSeesAListenerAndARefusal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	res := probe(t, map[string]any{"port": port})
	if res["open"] != true || res["state"] != "open" || res["reason"] != "" {
		t.Errorf("listening port: %v; want open", res)
	}
	if l, ok := res["latency_ms"].(float64); !ok || l < 0 || l > 2000 {
		t.Errorf("latency_ms = %v; want a small non-negative number", res["latency_ms"])
	}
	ln.Close()
	res = probe(t, map[string]any{"port": port, "host": "localhost", "timeout_ms": 500})
	if res["open"] != false || res["state"] != "closed" || !strings.Contains(res["reason"].(string), "refused") {
		t.Errorf("closed port: %v; want closed, connection refused", res)
	}
}

func TestResolveTakesLiteralsAndNamesFromTheHostsFile(t *testing.T) {
	hosts := t.TempDir() + "/hosts"
	os.WriteFile(hosts, []byte("127.0.0.1 localhost\n# 10.9.9.9 db\n10.0.0.5  db.lab.example db  # primary\nfd00::5 db\n"), 0o644)
	cases := map[string]string{
		"10.1.2.3":       "[10.1.2.3]",
		"[::1]":          "[::1]",
		"db":             "[10.0.0.5 fd00::5]",
		"DB.lab.example": "[10.0.0.5]",
	}
	for host, want := range cases {
		addrs, err := resolve(host, hosts)
		if got := fmt.Sprint(addrs); err != nil || got != want {
			t.Errorf("resolve(%q) = %s, %v; want %s", host, got, err, want)
		}
	}
	if addrs, err := resolve("nowhere.example", hosts); err == nil || !strings.Contains(err.Error(), "neither an IP address nor a name in") {
		t.Errorf("resolve(nowhere.example) = %v, %v; want a clear error", addrs, err)
	}
}

func TestPortOpenUDPTellsAClosedPortFromABoundOne(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	res := probe(t, map[string]any{"port": port, "protocol": "udp", "timeout_ms": 300})
	if res["open"] != true || res["state"] != "open|filtered" {
		t.Errorf("bound udp port: %v; want open|filtered", res)
	}
	pc.Close()
	res = probe(t, map[string]any{"port": port, "protocol": "udp", "timeout_ms": 1000})
	if res["open"] != false || res["state"] != "closed" {
		t.Errorf("closed udp port: %v; want closed", res)
	}
}

// setnsSyscall numbers setns(2) per architecture; package syscall does not export it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// inNetns runs fn on an OS thread moved into the named namespace. The thread
// stays locked, so the runtime throws it away afterwards.
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

func TestPortOpenCallsADroppedPortFilteredAfterItsTimeout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	var b [4]byte
	rand.Read(b[:])
	ns := "chaosrun-t-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	rules := "add table inet t\nadd chain inet t in { type filter hook input priority 0; }\nadd rule inet t in tcp dport 9 drop\n"
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s", ns, err, out)
	}
	p, err := kit.NewParams(declaration, map[string]any{"port": 9, "timeout_ms": 300})
	if err != nil {
		t.Fatal(err)
	}
	r := kit.NewTestReport()
	if err := inNetns(ns, func() error { return run(context.Background(), p, r) }); err != nil {
		t.Fatal(err)
	}
	res := r.Result()
	if res["open"] != false || res["state"] != "filtered" {
		t.Errorf("dropped port: %v; want filtered", res)
	}
	if l := res["latency_ms"].(float64); l < 250 || l > 2000 {
		t.Errorf("latency_ms = %v; want about the 300 ms timeout", l)
	}
}

// TestBuiltBinaryReportsAnOpenPortToTheMonitor runs the probe the way the
// monitor does: built, config on stdin, result over the callback.
func TestBuiltBinaryReportsAnOpenPortToTheMonitor(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the module")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bin := kittest.Build(t, ".")
	mon := kittest.NewMonitor(t)
	res := mon.RunBinary(t, bin, "port_open", map[string]any{"port": ln.Addr().(*net.TCPAddr).Port}, 10*time.Second)
	if res.Exit != 0 || res.Outcome.Err != nil {
		t.Fatalf("exit %d, monitor %v, stderr %q", res.Exit, res.Outcome.Err, res.Stderr)
	}
	fields := res.Outcome.ResultFields()
	if fields["open"] != true || fields["state"] != "open" {
		t.Errorf("result %v; want open", fields)
	}
}
