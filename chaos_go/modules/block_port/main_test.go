package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
	"chaosrun/chaos_go/kit/sysexec"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func needNft(t *testing.T) {
	t.Helper()
	if _, err := sysexec.LookTool("nft", "nft"); err != nil {
		t.Skipf("nft is not installed: %v", err)
	}
}

// listenEcho listens on 127.0.0.1 of the calling thread's network namespace and
// echoes every connection until the listener is closed.
func listenEcho() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go serveEcho(ln)
	return ln, nil
}

// serveEcho is the goroutine of listenEcho: it echoes every connection on ln
// until ln is closed.
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
	ns := netnstest.New(t)
	hostHadTable := exec.Command("nft", "list", "table", nftFamily, nftTable).Run() == nil
	err := netnstest.Run(ns, func() error {
		ln, err := listenEcho()
		if err != nil {
			return err
		}
		defer ln.Close()
		addr := ln.Addr().String()
		port := ln.Addr().(*net.TCPAddr).Port

		open, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("connect before the rule: %w", err)
		}
		defer open.Close()

		r := kit.NewTestReport()
		p, err := moduletest.ParseParams(declaration, fmt.Sprintf(`{"port": %d}`, port))
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
	ns := netnstest.New(t)
	err := netnstest.Run(ns, func() error {
		ln, err := listenEcho()
		if err != nil {
			return err
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		for i, raw := range []string{
			`{"port": 9, "protocol": "udp"}`,
			fmt.Sprintf(`{"port": %d, "direction": "output", "action": "reject"}`, port),
		} {
			r := kit.NewTestReport()
			p, err := moduletest.ParseParams(declaration, raw)
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
	if _, err := sysexec.LookTool("iptables", "iptables"); err == nil {
		t.Skip("iptables is installed here")
	}
	err := run(context.Background(), moduletest.Params(t, declaration, `{"port": 80, "backend": "iptables"}`), kit.NewTestReport())
	if err == nil || !strings.Contains(err.Error(), "iptables not found") {
		t.Fatalf("run with backend iptables = %v; want an 'iptables not found' error", err)
	}
}
