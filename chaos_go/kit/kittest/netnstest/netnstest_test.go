package netnstest

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
)

func TestRunBindsInsideTheNamespaceOnly(t *testing.T) {
	ns := New(t)
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		t.Fatalf("namespace %s: %v", ns, err)
	}
	err := Run(ns, func() error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		// /proc/net/tcp as a process in the namespace reads it lists the namespace's sockets only.
		out, err := Command(ns, "cat", "/proc/net/tcp").CombinedOutput()
		if err != nil {
			return err
		}
		local := fmt.Sprintf("0100007F:%04X 00000000:0000 0A", ln.Addr().(*net.TCPAddr).Port)
		if !strings.Contains(string(out), local) {
			t.Errorf("listener %s missing from %s's /proc/net/tcp:\n%s", ln.Addr(), ns, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	IP(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
	if out, err := Command(ns, "ip", "link", "show", "v0").CombinedOutput(); err != nil {
		t.Errorf("v0 in %s: %v: %s", ns, err, out)
	}
}

func TestRunReportsAMissingNamespace(t *testing.T) {
	called := false
	err := Run("chaosrun-t-no-such-namespace", func() error { called = true; return nil })
	if err == nil || called {
		t.Errorf("Run in a missing namespace = %v, called %v; want an error and fn not called", err, called)
	}
}
