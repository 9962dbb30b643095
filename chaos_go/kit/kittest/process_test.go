package kittest

import (
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUniqueSleepRunsUnderItsOwnNameAndWaitGoneSeesItEnd(t *testing.T) {
	path, name := UniqueSleep(t)
	if !strings.HasPrefix(name, "slp") || len(name) != 9 {
		t.Errorf("name = %q; want slp and 6 hex digits", name)
	}
	cmd := exec.Command(path, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	KillAtCleanup(t, pid, name)
	deadline := time.Now().Add(2 * time.Second)
	for Comm(pid) != name && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // until exec is through
	}
	if got := Comm(pid); got != name || !Alive(pid) {
		t.Fatalf("comm = %q, alive %v; want %q running", got, Alive(pid), name)
	}
	if WaitGone(pid, 100*time.Millisecond) {
		t.Fatal("WaitGone = true for a running process")
	}
	syscall.Kill(pid, syscall.SIGTERM)
	// Unreaped, it is a zombie, which WaitGone counts as gone.
	if !WaitGone(pid, 2*time.Second) {
		t.Error("WaitGone = false 2s after SIGTERM")
	}
	cmd.Wait()
	if Comm(pid) != "" || Alive(pid) {
		t.Errorf("reaped process: comm %q alive %v; want gone", Comm(pid), Alive(pid))
	}
}

func TestFreePortAndListenGiveUsablePorts(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		if port := FreePort(t, proto); port <= 0 || port > 65535 {
			t.Errorf("FreePort(%s) = %d", proto, port)
		}
	}
	ln, port := Listen(t)
	if ln.Addr().(*net.TCPAddr).Port != port {
		t.Errorf("Listen port %d; listener on %s", port, ln.Addr())
	}
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
