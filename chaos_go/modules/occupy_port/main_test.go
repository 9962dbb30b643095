package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
)

// TestMain lets kit.Spawn re-execute this test binary as the port holder.
func TestMain(m *testing.M) {
	kit.RunIfChild(kit.Module{Background: background})
	os.Exit(m.Run())
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func procFile(pid int, name string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	return strings.TrimRight(strings.TrimSpace(string(b)), "\x00")
}

// holder runs the module and returns the holder's pid, killed at cleanup.
func holder(t *testing.T, raw string) (int, *kit.Report) {
	t.Helper()
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatalf("run(%s): %v", raw, err)
	}
	pid, _ := r.Result()["pid"].(int)
	if pid <= 0 {
		t.Fatalf("pid = %#v", r.Result()["pid"])
	}
	kittest.KillAtCleanup(t, pid, kittest.Comm(pid))
	return pid, r
}

func waitFree(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still taken 3s after the holder was stopped: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestOccupyPortHoldsATCPPortUnderADaemonName(t *testing.T) {
	port := kittest.FreePort(t, "tcp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pid, r := holder(t, fmt.Sprintf(`{"port": %d, "address": "127.0.0.1"}`, port))

	if got := kittest.Comm(pid); got != "nginx: master p" {
		t.Errorf("comm = %q; want %q", got, "nginx: master p")
	}
	if got := procFile(pid, "cmdline"); got != "nginx: master process" {
		t.Errorf("cmdline = %q; want %q", got, "nginx: master process")
	}
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("second bind of %s succeeded; want address in use", addr)
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second bind of %s: %v; want EADDRINUSE", addr, err)
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("connect to the holder: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read from holder = %d, %v; want the connection closed", n, err)
	}
	c.Close()
	if got := r.Result()["address"]; got != addr {
		t.Errorf("address = %v; want %q", got, addr)
	}
	if got := r.Result()["until"]; got != 0.0 {
		t.Errorf("until = %v; want 0 (until killed)", got)
	}

	syscall.Kill(pid, syscall.SIGTERM)
	waitFree(t, addr)
}

func TestOccupyPortHoldsAUDPPortAndLetsGoAfterItsDuration(t *testing.T) {
	port := kittest.FreePort(t, "udp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	name := kittest.UniqueName("named-")
	pid, _ := holder(t, fmt.Sprintf(`{"port": %d, "address": "127.0.0.1", "protocol": "udp", "duration": 1, "process_name": %q}`, port, name))
	if got := kittest.Comm(pid); got != name {
		t.Errorf("comm = %q; want %q", got, name)
	}
	if pc, err := net.ListenPacket("udp", addr); err == nil {
		pc.Close()
		t.Fatalf("second bind of udp %s succeeded; want address in use", addr)
	}
	deadline := time.Now().Add(4 * time.Second)
	for {
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			pc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("udp %s still held 4s after a 1s duration", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestOccupyPortRefusesAPortThatIsTaken(t *testing.T) {
	_, port := kittest.Listen(t)
	r := kit.NewTestReport()
	err := run(context.Background(), moduletest.Params(t, declaration, fmt.Sprintf(`{"port": %d, "address": "127.0.0.1", "process_name": %q}`, port, kittest.UniqueName("named-"))), r)
	if err == nil || !strings.Contains(err.Error(), "is not free") {
		t.Fatalf("run = %v; want a 'not free' error", err)
	}
	if _, ok := r.Result()["pid"]; ok || len(r.Changes()) != 0 {
		t.Errorf("result %v, changes %v; want nothing started", r.Result(), r.Changes())
	}
}

// The default address binds every address, so this runs in a namespace of its own.
func TestOccupyPortOnTheDefaultAddressHoldsIPv4AndIPv6InANamespace(t *testing.T) {
	ns := netnstest.New(t)
	p := moduletest.Params(t, declaration, `{"port": 8080, "process_name": "`+kittest.UniqueName("named-")+`"}`)
	r := kit.NewTestReport()
	err := netnstest.Run(ns, func() error {
		if err := run(context.Background(), p, r); err != nil {
			return err
		}
		pid := r.Result()["pid"].(int)
		defer syscall.Kill(pid, syscall.SIGKILL)
		if got := r.Result()["address"]; got != "0.0.0.0:8080" {
			return fmt.Errorf("address = %v; want 0.0.0.0:8080", got)
		}
		for _, addr := range []string{"127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080"} {
			network := "tcp4"
			if strings.HasPrefix(addr, "[") {
				network = "tcp6"
			}
			ln, err := net.Listen(network, addr)
			if err == nil {
				ln.Close()
				return fmt.Errorf("bind %s succeeded; want it held", addr)
			}
			if !errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("bind %s: %v; want address in use", addr, err)
			}
		}
		c, err := net.DialTimeout("tcp", "127.0.0.1:8080", time.Second)
		if err != nil {
			return fmt.Errorf("connect over IPv4: %w", err)
		}
		c.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
