package kittest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/procfs"
)

// UniqueName returns prefix followed by 6 random hex digits: a process name no other
// process on the machine has, so matching by name can only hit what the test started.
func UniqueName(prefix string) string {
	var b [3]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// UniqueSleep copies the sleep binary to a temp file of this test named UniqueName("slp"),
// and returns its path and name. A process started from it has that name as its comm and
// argv[0]. It skips the test when there is no sleep binary.
func UniqueSleep(t testing.TB) (path, name string) {
	t.Helper()
	name = UniqueName("slp")
	src, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path, name
}

// Comm returns /proc/PID/comm without its newline, or "" once the process is gone.
func Comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// Alive says whether pid runs and is not a zombie.
func Alive(pid int) bool {
	state, err := procfs.State("/proc", pid)
	return err == nil && state != "Z" && state != "X"
}

// KillAtCleanup sends SIGKILL to pid when the test ends if it still runs with comm
// (which tells a fault process the test started from a later one reusing its pid).
func KillAtCleanup(t testing.TB, pid int, comm string) {
	t.Cleanup(func() {
		if Alive(pid) && Comm(pid) == comm {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// WaitGone waits up to within for pid to exit (or be a zombie) and says whether it did.
func WaitGone(pid int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if !Alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// FreePort returns a port of protocol ("tcp" or "udp") on 127.0.0.1 that was free a
// moment ago.
func FreePort(t testing.TB, protocol string) int {
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

// Listen listens on a free TCP port of 127.0.0.1 until the test ends, and returns the
// listener and its port.
func Listen(t testing.TB) (net.Listener, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().(*net.TCPAddr).Port
}
