// Package netnstest gives a module's test a network namespace of its own, so that a
// firewall rule, a qdisc, a sysctl or a wildcard bind it makes never touches the host's
// network. It needs root and iproute2's ip; New skips the test without root.
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
)

// New creates a network namespace named "chaosrun-t-XXXXXXXX", owned by this test, with
// lo up, and deletes it when the test ends. It skips the test when not run as root.
func New(t testing.TB) string {
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
	IP(t, name, "link", "set", "lo", "up")
	return name
}

// IP runs `ip -n NAME ARGS...` (for instance "link", "add", "v0", "type", "veth", "peer",
// "name", "v1") and fails the test when it fails.
func IP(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s %v: %v: %s", name, args, err, out)
	}
}

// Command is `ip netns exec NAME ARGV...`: argv run inside the namespace.
func Command(name string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...)
}

// setnsSyscall numbers setns(2) per architecture; package syscall does not export it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// Run runs fn on an OS thread moved into the named namespace and returns fn's error:
// sockets fn opens, processes it starts, netlink sockets and /proc/sys/net as it opens
// them are the namespace's. fn runs on another goroutine, so it must not call t.Fatal.
// The thread stays locked, so the runtime throws it away afterwards instead of reusing
// it in the wrong namespace.
func Run(name string, fn func() error) error {
	errc := make(chan error, 1)
	go runInNetns(name, fn, errc)
	return <-errc
}

// runInNetns is the goroutine of Run.
func runInNetns(name string, fn func() error, errc chan<- error) {
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
}
