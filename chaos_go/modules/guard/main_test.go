package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func acl(entries ...[3]uint32) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		out = binary.LittleEndian.AppendUint16(out, uint16(e[0]))
		out = binary.LittleEndian.AppendUint16(out, uint16(e[1]))
		out = binary.LittleEndian.AppendUint32(out, e[2])
	}
	return out
}

func TestPathsTheirParentsTheirACLsAndLines(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "app.conf")
	if err := os.WriteFile(file, []byte("a\nb\nb\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(dir, "shared")
	if err := os.WriteFile(shared, []byte("x"), 0o640); err != nil {
		t.Fatal(err)
	}
	const none = 0xFFFFFFFF
	if err := syscall.Setxattr(shared, "system.posix_acl_access", acl([3]uint32{aclUserObj, 6, none}, [3]uint32{aclUser, 7, 65534},
		[3]uint32{aclGroupObj, 4, none}, [3]uint32{aclMask, 7, none}, [3]uint32{aclOther, 0, none}), 0); err != nil {
		t.Fatalf("this filesystem keeps no ACL: %v", err)
	}
	r := moduletest.MustRun(t, declaration, run, map[string]any{"paths": []any{shared, filepath.Join(dir, "missing")}, "lines": []any{file}})
	if len(r.Changes()) != 0 {
		t.Fatalf("the guard changed something: %v", r.Changes())
	}
	paths := r.Result()["paths"].(map[string]any)
	got := paths[file].(map[string]any)
	if got["mode"] != "0640" || got["type"] != "file" || got["acl"] != nil || got["line_count"] != 3 {
		t.Errorf("app.conf: %v", got)
	}
	if lines := got["lines"].([]string); len(lines) != 3 || lines[1] != lines[2] || lines[0] == lines[1] {
		t.Errorf("line digests %v; want three, the last two equal", lines)
	}
	if entries := paths[shared].(map[string]any)["acl"]; !reflect.DeepEqual(entries, []string{"user::rw-", "user:65534:rwx", "group::r--", "mask::rwx", "other::---"}) {
		t.Errorf("ACL: %v", entries)
	}
	if paths[filepath.Join(dir, "missing")].(map[string]any)["exists"] != false {
		t.Errorf("a missing path: %v", paths[filepath.Join(dir, "missing")])
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, ok := paths[d]; !ok {
			t.Errorf("parent %s not read", d)
		}
		if d == "/" {
			break
		}
	}
	if data, _ := json.Marshal(r.Result()); len(data) > 1<<19 {
		t.Errorf("the result is %d bytes", len(data))
	}
}

func TestTreesStopAtTheLimit(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 20; i++ {
		if err := os.WriteFile(filepath.Join(dir, string(rune('a'+i))), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := machine{root: "/", ctx: context.Background()}
	tree := m.trees([]string{dir})[dir].(map[string]any)
	if n := len(tree["entries"].(map[string]any)); n != 21 || tree["truncated"] != false {
		t.Fatalf("%d entries, truncated %v; want 21 (the root and 20), false", n, tree["truncated"])
	}
	if e := tree["entries"].(map[string]any)[filepath.Join(dir, "c")].(map[string]any); e["mode"] != "0600" {
		t.Errorf("an entry: %v", e)
	}
	many := t.TempDir()
	for i := 0; i < maxTreeEntries+10; i++ {
		if err := os.WriteFile(filepath.Join(many, "f"+string(rune('0'+i%10))+filepath.Base(t.Name())+strconv.Itoa(i)), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tree = m.trees([]string{many})[many].(map[string]any)
	if n := len(tree["entries"].(map[string]any)); n != maxTreeEntries || tree["truncated"] != true {
		t.Fatalf("%d entries, truncated %v; want %d, true", n, tree["truncated"], maxTreeEntries)
	}
}

func TestSELinuxSudoersAndPAMFromAFakeRoot(t *testing.T) {
	root := t.TempDir()
	m := machine{root: root, ctx: context.Background()}
	if got := m.selinux()["mode"]; got != "disabled" {
		t.Errorf("no selinuxfs: %v", got)
	}
	write(t, filepath.Join(root, "sys/fs/selinux/enforce"), "0\n")
	if got := m.selinux()["mode"]; got != "permissive" {
		t.Errorf("setenforce 0: %v", got)
	}
	write(t, filepath.Join(root, "sys/fs/selinux/enforce"), "1")
	if got := m.selinux()["mode"]; got != "enforcing" {
		t.Errorf("enforcing: %v", got)
	}
	write(t, filepath.Join(root, "etc/sudoers"), "root ALL=(ALL) ALL\n")
	write(t, filepath.Join(root, "etc/sudoers.d/candidate"), "candidate ALL=(ALL) NOPASSWD: ALL\n")
	write(t, filepath.Join(root, "etc/pam.d/sshd"), "auth required pam_unix.so\n")
	sudoers := m.digests("/etc/sudoers", "/etc/sudoers.d")["files"].(map[string]any)
	pam := m.digests("", "/etc/pam.d")["files"].(map[string]any)
	if len(sudoers) != 2 || sudoers["/etc/sudoers.d/candidate"] == nil || len(pam) != 1 {
		t.Errorf("sudoers %v, pam %v", sudoers, pam)
	}
}

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBootRulesAreCounted(t *testing.T) {
	nft := "#!/usr/sbin/nft -f\nflush ruleset\ntable inet filter {\n  chain input {\n    type filter hook input priority 0; policy drop;\n" +
		"    ct state established accept # keep\n    tcp dport 22 accept\n\n    tcp dport 80 accept\n  }\n  chain output {\n    type filter hook output priority 0;\n  }\n}\n"
	if n := countNftRules(nft); n != 3 {
		t.Errorf("nftables.conf: %d rules; want 3", n)
	}
	saved := "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:mine - [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -j mine\nCOMMIT\n"
	if n := countIptablesRules(saved); n != 2 {
		t.Errorf("rules.v4: %d rules; want 2", n)
	}
	chains := iptablesChains(saved)
	if len(chains) != 2 || chains[0].Policy != "drop" || chains[0].Table != "filter" || chains[0].Chain != "INPUT" {
		t.Errorf("chains %v", chains)
	}
}

func TestTheLiveRulesetOfANamespace(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft is not installed (Debian's nftables package: scripts/install installs it)")
	}
	ns := netnstest.New(t)
	script := "table inet exam {\n chain input {\n type filter hook input priority 0; policy drop;\n tcp dport 22 accept\n tcp dport 80 accept\n }\n}\n"
	cmd := netnstest.Command(ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v: %s", err, out)
	}
	var live map[string]any
	if err := netnstest.Run(ns, func() error {
		live = machine{root: "/", ctx: context.Background()}.liveFirewall()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	chains, digests := live["chains"].([]chain), live["rule_digests"].([]string)
	if len(digests) != 2 || digests[0] == digests[1] {
		t.Errorf("rule digests %v; want two, distinct", digests)
	}
	if live["tool"] != "nft" || live["rules"] != 2 || live["error"] != "" || len(chains) != 1 || chains[0].Policy != "drop" || chains[0].Chain != "input" {
		t.Fatalf("live ruleset %v", live)
	}
}

func TestAListenerAndItsProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	self, _ := os.Readlink("/proc/self/exe")
	for _, l := range (machine{root: "/", ctx: context.Background()}).listeners() {
		if l.Port == port && l.Proto == "tcp" {
			if l.Address != "127.0.0.1" || l.Pid != os.Getpid() || l.Exe != self {
				t.Fatalf("listener %+v; want 127.0.0.1, pid %d, %s", l, os.Getpid(), self)
			}
			return
		}
	}
	t.Fatalf("port %d not among the listeners", port)
}

func TestAddressesOfProcNet(t *testing.T) {
	for field, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000000000000000000001000000:0016": "::1:22",
		"0000000000000000FFFF00000100007F:0050": "::ffff:127.0.0.1:80",
	} {
		addr, port, ok := decodeAddress(field)
		if got := addr + ":" + strconv.Itoa(port); !ok || got != want {
			t.Errorf("%s: %s; want %s", field, got, want)
		}
	}
}

func TestToolsAreHashed(t *testing.T) {
	tools := (machine{root: "/", ctx: context.Background()}).tools([]string{"sh", "no-such-tool-here"})
	sh := tools["sh"].(map[string]any)
	if sh["sha256"] == nil || sh["path"] == "" {
		t.Errorf("sh: %v", sh)
	}
	if tools["no-such-tool-here"].(map[string]any)["error"] != "not found" {
		t.Errorf("a missing tool: %v", tools["no-such-tool-here"])
	}
}

func TestTheListenersReportedAreBounded(t *testing.T) {
	if got := len(capped(make([]listener, maxListeners+100), maxListeners)); got != maxListeners {
		t.Errorf("%d listeners kept; want %d", got, maxListeners)
	}
	if got := len(capped(make([]listener, 3), maxListeners)); got != 3 {
		t.Errorf("%d listeners kept; want all 3", got)
	}
}
