package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"syscall"
	"testing"

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

// setnsSyscall numbers setns(2) per architecture; package syscall does not export it.
var setnsSyscall = map[string]uintptr{"amd64": 308, "arm64": 268, "386": 346, "arm": 375, "riscv64": 268, "ppc64le": 350, "s390x": 339}

// inNetns runs fn on an OS thread moved into the named namespace; processes it
// starts and netlink sockets it opens live there. The thread stays locked, so
// the runtime throws it away afterwards instead of reusing it.
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

// vethNetns creates a namespace owned by this test holding a veth pair v0/v1.
func vethNetns(t *testing.T) string {
	t.Helper()
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
	if out, err := exec.Command("ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1").CombinedOutput(); err != nil {
		t.Fatalf("add veth in %s: %v: %s", ns, err, out)
	}
	return ns
}

func TestNetemArgvIsTheExactTcCommand(t *testing.T) {
	cases := []struct {
		s    shaping
		want string
	}{
		{shaping{100, 10, 5}, "/sbin/tc qdisc replace dev eth0 root netem delay 100ms 10ms loss 5%"},
		{shaping{250, 0, 0}, "/sbin/tc qdisc replace dev eth0 root netem delay 250ms"},
		{shaping{0, 0, 0.5}, "/sbin/tc qdisc replace dev eth0 root netem loss 0.5%"},
	}
	for _, c := range cases {
		argv, err := netemArgv("/sbin/tc", "eth0", c.s)
		if got := strings.Join(argv, " "); err != nil || got != c.want {
			t.Errorf("netemArgv(%+v) = %q, %v; want %q", c.s, got, err, c.want)
		}
	}
	for _, s := range []shaping{{0, 0, 0}, {0, 20, 1}} {
		if argv, err := netemArgv("tc", "eth0", s); err == nil {
			t.Errorf("netemArgv(%+v) = %q; want an error", s, argv)
		}
	}
}

func TestNetemOnAVethFailsWithTcsMessageWhenTheKernelLacksNetem(t *testing.T) {
	if _, err := lookTool("tc", "tc"); err != nil {
		t.Skip("tc is not installed")
	}
	ns := vethNetns(t)
	r := kit.NewTestReport()
	p := params(t, `{"interface": "v0", "delay_ms": 100, "jitter_ms": 10, "loss_percent": 5}`)
	err := inNetns(ns, func() error { return run(context.Background(), p, r) })
	if err == nil {
		// A kernel with sch_netem: the qdisc must really be there.
		out, _ := exec.Command("ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", "v0", "root").CombinedOutput()
		if !strings.Contains(string(out), "netem") || !strings.Contains(string(out), "delay 100ms") {
			t.Fatalf("run succeeded but the root qdisc is %q", out)
		}
		want := [][]string{{"tc", "qdisc", "del", "dev", "v0", "root"}}
		if got := r.Changes()[0].Detail["undo"]; !reflect.DeepEqual(got, want) {
			t.Errorf("undo = %q; want %q", got, want)
		}
		return
	}
	msg := err.Error()
	t.Logf("run: %s", msg)
	for _, want := range []string{"tc qdisc replace dev v0 root netem delay 100ms 10ms loss 5%", "exit status", "Error: Specified qdisc kind is unknown."} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	if len(r.Changes()) != 0 {
		t.Errorf("changes = %+v after a failure; want none", r.Changes())
	}
}

func TestNetemNamesAMissingInterfaceOrTc(t *testing.T) {
	ns := vethNetns(t)
	p := params(t, `{"interface": "nosuch0", "delay_ms": 100}`)
	err := inNetns(ns, func() error { return run(context.Background(), p, kit.NewTestReport()) })
	if err == nil || !strings.Contains(err.Error(), `Cannot find device "nosuch0"`) {
		t.Errorf("run on a missing interface = %v; want tc's 'Cannot find device \"nosuch0\"'", err)
	}
	missing := filepath.Join(t.TempDir(), "tc")
	err = run(context.Background(), params(t, `{"interface": "lo", "delay_ms": 100, "tc_path": "`+missing+`"}`), kit.NewTestReport())
	if err == nil || !strings.HasPrefix(err.Error(), "tc not found: ") {
		t.Errorf("run with a missing tc = %v; want 'tc not found: ...'", err)
	}
	err = run(context.Background(), params(t, `{"interface": "lo"}`), kit.NewTestReport())
	if err == nil || !strings.Contains(err.Error(), "nothing to do") {
		t.Errorf("run without shaping = %v; want 'nothing to do'", err)
	}
}
