package main

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
	"chaosrun/chaos_go/kit/sysexec"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// vethNetns creates a namespace owned by this test holding a veth pair v0/v1.
func vethNetns(t *testing.T) string {
	t.Helper()
	ns := netnstest.New(t)
	netnstest.IP(t, ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
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
	if _, err := sysexec.LookTool("tc", "tc"); err != nil {
		t.Skip("tc is not installed")
	}
	ns := vethNetns(t)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"interface": "v0", "delay_ms": 100, "jitter_ms": 10, "loss_percent": 5}`)
	err := netnstest.Run(ns, func() error { return run(context.Background(), p, r) })
	if err == nil {
		// A kernel with sch_netem: the qdisc must really be there.
		out, _ := netnstest.Command(ns, "tc", "qdisc", "show", "dev", "v0", "root").CombinedOutput()
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
	p := moduletest.Params(t, declaration, `{"interface": "nosuch0", "delay_ms": 100}`)
	err := netnstest.Run(ns, func() error { return run(context.Background(), p, kit.NewTestReport()) })
	if err == nil || !strings.Contains(err.Error(), `Cannot find device "nosuch0"`) {
		t.Errorf("run on a missing interface = %v; want tc's 'Cannot find device \"nosuch0\"'", err)
	}
	missing := filepath.Join(t.TempDir(), "tc")
	err = run(context.Background(), moduletest.Params(t, declaration, `{"interface": "lo", "delay_ms": 100, "tc_path": "`+missing+`"}`), kit.NewTestReport())
	if err == nil || !strings.HasPrefix(err.Error(), "tc not found: ") {
		t.Errorf("run with a missing tc = %v; want 'tc not found: ...'", err)
	}
	err = run(context.Background(), moduletest.Params(t, declaration, `{"interface": "lo"}`), kit.NewTestReport())
	if err == nil || !strings.Contains(err.Error(), "nothing to do") {
		t.Errorf("run without shaping = %v; want 'nothing to do'", err)
	}
}
