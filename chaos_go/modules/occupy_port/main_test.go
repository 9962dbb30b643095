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

// TestMain lets kit.Spawn re-execute this test binary as the port holder.
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

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T, protocol string) int {
	t.Helper()
	if protocol == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func procFile(pid int, name string) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, name))
	return strings.TrimRight(strings.TrimSpace(string(b)), "\x00")
}

// holder runs the module and returns the holder's pid, killed at cleanup.
func holder(t *testing.T, raw string) (int, *kit.Report) {
	t.Helper()
	r := kit.NewTestReport()
	if err := run(context.Background(), params(t, raw), r); err != nil {
		t.Fatalf("run(%s): %v", raw, err)
	}
	pid, _ := r.Result()["pid"].(int)
	if pid <= 0 {
		t.Fatalf("pid = %#v", r.Result()["pid"])
	}
	comm := procFile(pid, "comm")
	t.Cleanup(func() {
		if procFile(pid, "comm") == comm {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
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
	port := freePort(t, "tcp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	pid, r := holder(t, fmt.Sprintf(`{"port": %d, "address": "127.0.0.1"}`, port))

	if got := procFile(pid, "comm"); got != "nginx: master p" {
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
	port := freePort(t, "udp")
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	name := uniqueName("named-")
	pid, _ := holder(t, fmt.Sprintf(`{"port": %d, "address": "127.0.0.1", "protocol": "udp", "duration": 1, "process_name": %q}`, port, name))
	if got := procFile(pid, "comm"); got != name {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	r := kit.NewTestReport()
	err = run(context.Background(), params(t, fmt.Sprintf(`{"port": %d, "address": "127.0.0.1", "process_name": %q}`, port, uniqueName("named-"))), r)
	if err == nil || !strings.Contains(err.Error(), "is not free") {
		t.Fatalf("run = %v; want a 'not free' error", err)
	}
	if _, ok := r.Result()["pid"]; ok || len(r.Changes()) != 0 {
		t.Errorf("result %v, changes %v; want nothing started", r.Result(), r.Changes())
	}
}

func TestSocketInodesReadsListeningPortsFromProcNet(t *testing.T) {
	dir := t.TempDir()
	table := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0\n"
	path := dir + "/tcp"
	os.WriteFile(path, []byte(table), 0o644)
	inodes := map[string]bool{}
	if err := socketInodes(path, 8080, tcpListen, inodes); err != nil {
		t.Fatal(err)
	}
	if len(inodes) != 1 || !inodes["4242"] {
		t.Errorf("inodes = %v; want only the listener 4242", inodes)
	}
}

// setnsSyscall numbers setns(2) per architecture; package syscall does not export it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// inNetns runs fn on an OS thread moved into the named namespace; sockets it
// opens and processes it starts live there. The thread stays locked, so the
// runtime throws it away afterwards.
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

// The default address binds every address, so this runs in a namespace of its own.
func TestOccupyPortOnTheDefaultAddressHoldsIPv4AndIPv6InANamespace(t *testing.T) {
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
	exec.Command("ip", "-n", ns, "link", "set", "lo", "up").Run()
	p := params(t, `{"port": 8080, "process_name": "`+uniqueName("named-")+`"}`)
	r := kit.NewTestReport()
	err := inNetns(ns, func() error {
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
