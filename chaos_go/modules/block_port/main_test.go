package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
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

// newNetns creates a network namespace owned by this test, with lo up, and
// deletes it when the test ends.
func newNetns(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	var b [4]byte
	rand.Read(b[:])
	name := "chaosrun-t-" + hex.EncodeToString(b[:])
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("set lo up in %s: %v: %s", name, err, out)
	}
	return name
}

// setnsSyscall numbers setns(2) per architecture; package syscall does not export it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// inNetns runs fn on an OS thread moved into the named namespace; sockets it
// opens and processes it starts live there. The thread stays locked, so the
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

func needNft(t *testing.T) {
	t.Helper()
	if _, err := lookTool("nft", "nft"); err != nil {
		t.Skipf("nft is not installed: %v", err)
	}
}

// serveEcho echoes every connection on ln until ln is closed.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				c.Write(buf[:n])
			}
		}()
	}
}

func echoOnce(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo got %q; want %q", buf, msg)
	}
	return nil
}

func TestNftRuleTextForEachOption(t *testing.T) {
	cases := []struct {
		spec blockSpec
		want string
	}{
		{blockSpec{80, "tcp", "input", "drop", true}, "tcp flags & (fin|syn|rst|ack) == syn tcp dport 80 drop"},
		{blockSpec{53, "udp", "input", "drop", true}, "udp dport 53 drop"},
		{blockSpec{53, "udp", "output", "reject", false}, "udp dport 53 reject"},
		{blockSpec{443, "tcp", "input", "reject", false}, "tcp dport 443 reject with tcp reset"},
	}
	for _, c := range cases {
		if got := c.spec.nftRule(); got != c.want {
			t.Errorf("nftRule(%+v) = %q; want %q", c.spec, got, c.want)
		}
	}
	got := blockSpec{80, "tcp", "input", "drop", false}.nftScript(false, false)
	want := "add table inet filter_local\n" +
		"add chain inet filter_local input { type filter hook input priority 0; policy accept; }\n" +
		"add rule inet filter_local input tcp dport 80 drop\n"
	if got != want {
		t.Errorf("nftScript = %q; want %q", got, want)
	}
	if got := (blockSpec{80, "tcp", "input", "drop", false}).nftScript(true, true); got != "add rule inet filter_local input tcp dport 80 drop\n" {
		t.Errorf("nftScript with table and chain present = %q", got)
	}
}

func TestIptablesArgsInsertAndDeleteTheSameRule(t *testing.T) {
	s := blockSpec{8080, "tcp", "output", "reject", true}
	got := strings.Join(s.iptablesArgs("-I"), " ")
	want := "-w -I OUTPUT -p tcp -m tcp --syn --dport 8080 -j REJECT --reject-with tcp-reset"
	if got != want {
		t.Errorf("iptablesArgs(-I) = %q; want %q", got, want)
	}
	if got := strings.Join(s.iptablesArgs("-D"), " "); got != strings.Replace(want, "-I", "-D", 1) {
		t.Errorf("iptablesArgs(-D) = %q", got)
	}
}

func TestBlockPortDropsNewConnectionsButKeepsOpenOnesInANamespace(t *testing.T) {
	needNft(t)
	ns := newNetns(t)
	hostHadTable := exec.Command("nft", "list", "table", nftFamily, nftTable).Run() == nil
	err := inNetns(ns, func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go serveEcho(ln)
		addr := ln.Addr().String()
		port := ln.Addr().(*net.TCPAddr).Port

		open, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("connect before the rule: %w", err)
		}
		defer open.Close()

		r := kit.NewTestReport()
		p, err := tryParams(fmt.Sprintf(`{"port": %d}`, port))
		if err != nil {
			return err
		}
		if err := run(context.Background(), p, r); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		res := r.Result()
		if res["backend"] != "nft" {
			return fmt.Errorf("backend = %v; want nft", res["backend"])
		}
		handle, _ := res["handle"].(int64)
		if handle <= 0 {
			return fmt.Errorf("handle = %#v; want a positive int64", res["handle"])
		}
		if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
			c.Close()
			return errors.New("new connection succeeded after block_port; want it dropped")
		} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return fmt.Errorf("new connection failed with %v; want a timeout (drop)", err)
		}
		if err := echoOnce(open, "still here"); err != nil {
			return fmt.Errorf("connection opened before the rule broke: %w", err)
		}

		changes := r.Changes()
		if len(changes) != 1 || changes[0].Action != "nft_add_rule" {
			return fmt.Errorf("changes = %+v; want one nft_add_rule", changes)
		}
		before := changes[0].Before.(map[string]any)
		if before["table_existed"] != false || before["chain_existed"] != false {
			return fmt.Errorf("before = %v; want a fresh table and chain", before)
		}
		undo := changes[0].Detail["undo"].([]string)
		if out, err := exec.Command(undo[0], undo[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("undo %v: %v: %s", undo, err, out)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("connect after undo: %w", err)
		}
		c.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !hostHadTable && exec.Command("nft", "list", "table", nftFamily, nftTable).Run() == nil {
		t.Errorf("table %s %s appeared on the host; want it only in the test namespace", nftFamily, nftTable)
	}
}

func TestBlockPortRejectOnOutputRefusesAtOnceAndReusesTheTable(t *testing.T) {
	needNft(t)
	ns := newNetns(t)
	err := inNetns(ns, func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		go serveEcho(ln)
		port := ln.Addr().(*net.TCPAddr).Port
		for i, raw := range []string{
			`{"port": 9, "protocol": "udp"}`,
			fmt.Sprintf(`{"port": %d, "direction": "output", "action": "reject"}`, port),
		} {
			r := kit.NewTestReport()
			p, err := tryParams(raw)
			if err != nil {
				return err
			}
			if err := run(context.Background(), p, r); err != nil {
				return fmt.Errorf("run %s: %w", raw, err)
			}
			before := r.Changes()[0].Before.(map[string]any)
			if i == 1 && (before["table_existed"] != true || before["chain_existed"] != false) {
				return fmt.Errorf("second rule's before = %v; want table existing, output chain new", before)
			}
		}
		start := time.Now()
		_, err = net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("connect after reject rule: %v; want connection refused", err)
		}
		if d := time.Since(start); d > time.Second {
			return fmt.Errorf("refusal took %v; want it at once", d)
		}
		out, err := exec.Command("nft", "list", "table", nftFamily, nftTable).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft list: %v: %s", err, out)
		}
		for _, want := range []string{"udp dport 9 drop", fmt.Sprintf("tcp dport %d reject with tcp reset", port)} {
			if !strings.Contains(string(out), want) {
				return fmt.Errorf("ruleset %q lacks %q", out, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBlockPortIptablesBackendSaysWhenItIsMissing(t *testing.T) {
	if _, err := lookTool("iptables", "iptables"); err == nil {
		t.Skip("iptables is installed here")
	}
	err := run(context.Background(), params(t, `{"port": 80, "backend": "iptables"}`), kit.NewTestReport())
	if err == nil || !strings.Contains(err.Error(), "iptables not found") {
		t.Fatalf("run with backend iptables = %v; want an 'iptables not found' error", err)
	}
}
