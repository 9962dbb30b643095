package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
	"chaosrun/chaos_go/kit/sysexec"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// A ruleset an administrator could have written: established first, loopback, a set of
// ports, a range dropped, a source-address rule, a jump to a chain that rejects one port,
// a policy drop; and a second base chain, later, that drops 22 again.
const rules = `table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname "lo" accept
    tcp dport { 22, 80 } accept
    meta l4proto udp udp dport 53 accept
    tcp dport 8000-8100 counter drop
    ip saddr 10.0.0.0/8 tcp dport 443 accept
    ip saddr 192.0.2.0/24 tcp dport 8443 drop
    jump extra
  }
  chain extra {
    tcp dport 8443 reject with tcp reset
    tcp dport 9000 accept
    return
  }
}
table ip late {
  chain input {
    type filter hook input priority 10; policy accept;
    tcp dport 22 drop
  }
}
`

// loaded is what real nft makes of rules, as `nft -j list ruleset` prints it, read in a
// network namespace of the test's own.
func loaded(t *testing.T, text string) *ruleset {
	t.Helper()
	nft, err := sysexec.LookTool("nft", "nft")
	if err != nil {
		t.Skipf("nft is not installed: %v", err)
	}
	file := filepath.Join(t.TempDir(), "rules.nft")
	os.WriteFile(file, []byte(text), 0o644)
	ns := netnstest.New(t)
	if out, err := netnstest.Command(ns, nft, "-f", file).CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	out, err := netnstest.Command(ns, nft, "-j", "list", "ruleset").Output()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := parseRuleset(out)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func TestTheRulesetIsWalkedAsTheKernelWalksIt(t *testing.T) {
	rs := loaded(t, rules)
	for _, c := range []struct {
		proto           string
		port            float64
		open            bool
		verdict, where  string
		uncertainPrefix string
	}{
		{"tcp", 80, true, "accept", "ip late input policy", ""},
		{"tcp", 22, false, "drop", "ip late input handle 2", ""},
		{"udp", 53, true, "accept", "ip late input policy", ""},
		{"udp", 80, false, "drop", "inet filter input policy", ""},
		{"tcp", 8050, false, "drop", "inet filter input handle 8", ""},
		{"tcp", 8443, false, "reject", "inet filter extra handle 12", "inet filter input handle 10: ip saddr"},
		{"tcp", 9000, true, "accept", "ip late input policy", ""},
		{"tcp", 443, false, "drop", "inet filter input policy", ""},
	} {
		open, verdict, where, uncertain := judgeRuleset(rs, packet{c.proto, c.port})
		if open != c.open || verdict != c.verdict || where != c.where {
			t.Errorf("%s/%v: open %v, %s at %q; want %v, %s at %q", c.proto, c.port, open, verdict, where, c.open, c.verdict, c.where)
		}
		if c.uncertainPrefix != "" && (len(uncertain) == 0 || !strings.HasPrefix(uncertain[0], c.uncertainPrefix)) {
			t.Errorf("%s/%v: uncertain %q; want %q first", c.proto, c.port, uncertain, c.uncertainPrefix)
		}
	}
	// 443 is let in only from 10.0.0.0/8: a port alone cannot say, so it is listed
	_, _, _, uncertain := judgeRuleset(rs, packet{"tcp", 443})
	if !reflect.DeepEqual(uncertain, []string{}) {
		t.Errorf("443: uncertain %q; an accept that may not apply blocks nothing", uncertain)
	}
}

func TestNoRulesetLetsEverythingIn(t *testing.T) {
	rs := loaded(t, "")
	if open, verdict, where, _ := judgeRuleset(rs, packet{"tcp", 80}); !open || verdict != "accept" || where != "" {
		t.Errorf("empty ruleset: %v %s %q", open, verdict, where)
	}
}

// The probe as a whole, in a namespace where block_port-style rules are live and the boot
// file says otherwise; nftables.service "enabled" through a fake systemctl.
func TestTheProbeJudgesTheLiveAndTheBootRuleset(t *testing.T) {
	nft, err := sysexec.LookTool("nft", "nft")
	if err != nil {
		t.Skipf("nft is not installed: %v", err)
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("no unshare (util-linux)")
	}
	dir := t.TempDir()
	boot := filepath.Join(dir, "nftables.conf")
	os.WriteFile(boot, []byte("flush ruleset\ntable inet filter {\n chain input {\n  type filter hook input priority 0; policy accept;\n  tcp dport 80 drop\n }\n}\n"), 0o644)
	systemctl := filepath.Join(dir, "systemctl")
	os.WriteFile(systemctl, []byte("#!/bin/sh\necho enabled\n"), 0o755)
	ns := netnstest.New(t)
	live := filepath.Join(dir, "live.nft")
	os.WriteFile(live, []byte("table inet filter_local {\n chain input {\n  type filter hook input priority 0;\n  tcp dport 8080 drop\n }\n}\n"), 0o644)
	if out, err := netnstest.Command(ns, nft, "-f", live).CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	for port, want := range map[int]map[string]any{
		80:   {"open": true, "boot_open": false, "boot_verdict": "drop", "boot_rule": "inet filter input handle 2", "boot_enabled": true, "reason": ""},
		8080: {"open": false, "verdict": "drop", "rule": "inet filter_local input handle 2", "boot_open": true, "reason": ""},
	} {
		var res map[string]any
		err := netnstest.Run(ns, func() error {
			r := kit.NewTestReport()
			p, err := moduletest.ParseParams(declaration, `{"port": `+strconv.Itoa(port)+`, "boot_file": "`+boot+`", "systemctl_path": "`+systemctl+`"}`)
			if err != nil {
				return err
			}
			err = run(context.Background(), p, r)
			res = r.Result()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			if !reflect.DeepEqual(res[k], v) {
				t.Errorf("port %d: %s = %#v; want %#v (result %v)", port, k, res[k], v, res)
			}
		}
	}
}
