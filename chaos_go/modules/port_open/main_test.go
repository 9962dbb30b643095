package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestPortOpenSeesAListenerAndARefusal(t *testing.T) {
	ln, port := kittest.Listen(t)
	res := moduletest.Probe(t, declaration, run, map[string]any{"port": port})
	if res["open"] != true || res["state"] != "open" || res["reason"] != "" {
		t.Errorf("listening port: %v; want open", res)
	}
	if l, ok := res["latency_ms"].(float64); !ok || l < 0 || l > 2000 {
		t.Errorf("latency_ms = %v; want a small non-negative number", res["latency_ms"])
	}
	ln.Close()
	res = moduletest.Probe(t, declaration, run, map[string]any{"port": port, "host": "localhost", "timeout_ms": 500})
	if res["open"] != false || res["state"] != "closed" || !strings.Contains(res["reason"].(string), "refused") {
		t.Errorf("closed port: %v; want closed, connection refused", res)
	}
}

// A forwarder (qemu's user network) accepts for the service and hangs up when the service
// behind it refuses: with settle_ms that is closed; a listener that keeps the connection,
// or says something first, is open.
func TestSettleTellsAConnectionClosedAtOnceFromAServiceThatStays(t *testing.T) {
	for _, tc := range []struct {
		name   string
		serve  func(net.Conn)
		settle int
		want   string
	}{
		{"hangs up", func(c net.Conn) { c.Close() }, 1000, "closed"},
		{"hangs up, no settle", func(c net.Conn) { c.Close() }, 0, "open"},
		{"resets", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }, 1000, "closed"},
		{"says hello, then hangs up", func(c net.Conn) { c.Write([]byte("SSH-2.0-x\r\n")); c.Close() }, 1000, "open"},
		{"stays", func(c net.Conn) { time.Sleep(2 * time.Second); c.Close() }, 300, "open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, port := kittest.Listen(t)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go tc.serve(c)
				}
			}()
			res := moduletest.Probe(t, declaration, run, map[string]any{"port": port, "settle_ms": tc.settle})
			if res["state"] != tc.want || res["open"] != (tc.want == "open") {
				t.Errorf("%s: %v; want %s", tc.name, res, tc.want)
			}
			// (a reset may also come before the connect is seen complete: closed all the same)
			if tc.name == "hangs up" && !strings.Contains(res["reason"].(string), "accepted, then closed without a byte") {
				t.Errorf("reason = %q", res["reason"])
			}
		})
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
	res := moduletest.Probe(t, declaration, run, map[string]any{"port": port, "protocol": "udp", "timeout_ms": 300})
	if res["open"] != true || res["state"] != "open|filtered" {
		t.Errorf("bound udp port: %v; want open|filtered", res)
	}
	pc.Close()
	res = moduletest.Probe(t, declaration, run, map[string]any{"port": port, "protocol": "udp", "timeout_ms": 1000})
	if res["open"] != false || res["state"] != "closed" {
		t.Errorf("closed udp port: %v; want closed", res)
	}
}

func TestPortOpenCallsADroppedPortFilteredAfterItsTimeout(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	ns := netnstest.New(t)
	rules := "add table inet t\nadd chain inet t in { type filter hook input priority 0; }\nadd rule inet t in tcp dport 9 drop\n"
	cmd := netnstest.Command(ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s", ns, err, out)
	}
	p, err := kit.NewParams(declaration, map[string]any{"port": 9, "timeout_ms": 300})
	if err != nil {
		t.Fatal(err)
	}
	r := kit.NewTestReport()
	if err := netnstest.Run(ns, func() error { return run(context.Background(), p, r) }); err != nil {
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
	_, port := kittest.Listen(t)
	bin := kittest.Build(t, ".")
	mon := kittest.NewMonitor(t)
	res := mon.RunBinary(t, bin, "port_open", map[string]any{"port": port}, 10*time.Second)
	if res.Exit != 0 || res.Outcome.Err != nil {
		t.Fatalf("exit %d, monitor %v, stderr %q", res.Exit, res.Outcome.Err, res.Stderr)
	}
	fields := res.Outcome.ResultFields()
	if fields["open"] != true || fields["state"] != "open" {
		t.Errorf("result %v; want open", fields)
	}
}
