package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
	"chaosrun/chaos_go/kit/sysexec"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func needNft(t *testing.T) {
	t.Helper()
	if _, err := sysexec.LookTool("nft", "nft"); err != nil {
		t.Skipf("nft is not installed: %v", err)
	}
}

// listenEcho listens on 127.0.0.1 of the calling thread's network namespace and
// echoes every connection until the listener is closed.
func listenEcho() (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go serveEcho(ln)
	return ln, nil
}

// serveEcho is the goroutine of listenEcho: it echoes every connection on ln
// until ln is closed.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				c.Write(buf[:n])
			}
		}()
	}
}

func echoOnce(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := c.Read(buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo got %q; want %q", buf, msg)
	}
	return nil
}

func TestNftRuleTextForEachOption(t *testing.T) {
	cases := []struct {
		spec blockSpec
		want string
	}{
		{blockSpec{80, "tcp", "input", "drop", true}, "tcp flags & (fin|syn|rst|ack) == syn tcp dport 80 drop"},
		{blockSpec{53, "udp", "input", "drop", true}, "udp dport 53 drop"},
		{blockSpec{53, "udp", "output", "reject", false}, "udp dport 53 reject"},
		{blockSpec{443, "tcp", "input", "reject", false}, "tcp dport 443 reject with tcp reset"},
	}
	for _, c := range cases {
		if got := c.spec.nftRule(); got != c.want {
			t.Errorf("nftRule(%+v) = %q; want %q", c.spec, got, c.want)
		}
	}
	got := blockSpec{80, "tcp", "input", "drop", false}.nftScript(false, false)
	want := "add table inet filter_local\n" +
		"add chain inet filter_local input { type filter hook input priority 0; policy accept; }\n" +
		"add rule inet filter_local input tcp dport 80 drop\n"
	if got != want {
		t.Errorf("nftScript = %q; want %q", got, want)
	}
	if got := (blockSpec{80, "tcp", "input", "drop", false}).nftScript(true, true); got != "add rule inet filter_local input tcp dport 80 drop\n" {
		t.Errorf("nftScript with table and chain present = %q", got)
	}
}

func TestIptablesArgsInsertAndDeleteTheSameRule(t *testing.T) {
	s := blockSpec{8080, "tcp", "output", "reject", true}
	got := strings.Join(s.iptablesArgs("-I"), " ")
	want := "-w -I OUTPUT -p tcp -m tcp --syn --dport 8080 -j REJECT --reject-with tcp-reset"
	if got != want {
		t.Errorf("iptablesArgs(-I) = %q; want %q", got, want)
	}
	if got := strings.Join(s.iptablesArgs("-D"), " "); got != strings.Replace(want, "-I", "-D", 1) {
		t.Errorf("iptablesArgs(-D) = %q", got)
	}
}

func TestBlockPortDropsNewConnectionsButKeepsOpenOnesInANamespace(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	hostHadTable := exec.Command("nft", "list", "table", nftFamily, nftTable).Run() == nil
	err := netnstest.Run(ns, func() error {
		ln, err := listenEcho()
		if err != nil {
			return err
		}
		defer ln.Close()
		addr := ln.Addr().String()
		port := ln.Addr().(*net.TCPAddr).Port

		open, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("connect before the rule: %w", err)
		}
		defer open.Close()

		r := kit.NewTestReport()
		p, err := moduletest.ParseParams(declaration, fmt.Sprintf(`{"port": %d}`, port))
		if err != nil {
			return err
		}
		if err := run(context.Background(), p, r); err != nil {
			return fmt.Errorf("run: %w", err)
		}
		res := r.Result()
		if res["backend"] != "nft" {
			return fmt.Errorf("backend = %v; want nft", res["backend"])
		}
		handle, _ := res["handle"].(int64)
		if handle <= 0 {
			return fmt.Errorf("handle = %#v; want a positive int64", res["handle"])
		}
		if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
			c.Close()
			return errors.New("new connection succeeded after block_port; want it dropped")
		} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return fmt.Errorf("new connection failed with %v; want a timeout (drop)", err)
		}
		if err := echoOnce(open, "still here"); err != nil {
			return fmt.Errorf("connection opened before the rule broke: %w", err)
		}

		changes := r.Changes()
		if len(changes) != 1 || changes[0].Action != "nft_add_rule" {
			return fmt.Errorf("changes = %+v; want one nft_add_rule", changes)
		}
		before := changes[0].Before.(map[string]any)
		if before["table_existed"] != false || before["chain_existed"] != false {
			return fmt.Errorf("before = %v; want a fresh table and chain", before)
		}
		undo := changes[0].Detail["undo"].([]string)
		if out, err := exec.Command(undo[0], undo[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("undo %v: %v: %s", undo, err, out)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return fmt.Errorf("connect after undo: %w", err)
		}
		c.Close()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !hostHadTable && exec.Command("nft", "list", "table", nftFamily, nftTable).Run() == nil {
		t.Errorf("table %s %s appeared on the host; want it only in the test namespace", nftFamily, nftTable)
	}
}

func TestBlockPortRejectOnOutputRefusesAtOnceAndReusesTheTable(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	err := netnstest.Run(ns, func() error {
		ln, err := listenEcho()
		if err != nil {
			return err
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		for i, raw := range []string{
			`{"port": 9, "protocol": "udp"}`,
			fmt.Sprintf(`{"port": %d, "direction": "output", "action": "reject"}`, port),
		} {
			r := kit.NewTestReport()
			p, err := moduletest.ParseParams(declaration, raw)
			if err != nil {
				return err
			}
			if err := run(context.Background(), p, r); err != nil {
				return fmt.Errorf("run %s: %w", raw, err)
			}
			before := r.Changes()[0].Before.(map[string]any)
			if i == 1 && (before["table_existed"] != true || before["chain_existed"] != false) {
				return fmt.Errorf("second rule's before = %v; want table existing, output chain new", before)
			}
		}
		start := time.Now()
		_, err = net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("connect after reject rule: %v; want connection refused", err)
		}
		if d := time.Since(start); d > time.Second {
			return fmt.Errorf("refusal took %v; want it at once", d)
		}
		out, err := exec.Command("nft", "list", "table", nftFamily, nftTable).CombinedOutput()
		if err != nil {
			return fmt.Errorf("nft list: %v: %s", err, out)
		}
		for _, want := range []string{"udp dport 9 drop", fmt.Sprintf("tcp dport %d reject with tcp reset", port)} {
			if !strings.Contains(string(out), want) {
				return fmt.Errorf("ruleset %q lacks %q", out, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBlockPortIptablesBackendSaysWhenItIsMissing(t *testing.T) {
	if _, err := sysexec.LookTool("iptables", "iptables"); err == nil {
		t.Skip("iptables is installed here")
	}
	err := run(context.Background(), moduletest.Params(t, declaration, `{"port": 80, "backend": "iptables"}`), kit.NewTestReport())
	if err == nil || !strings.Contains(err.Error(), "iptables not found") {
		t.Fatalf("run with backend iptables = %v; want an 'iptables not found' error", err)
	}
}

// -- persist ---------------------------------------------------------------------------------

// debianNftablesConf is /etc/nftables.conf as Debian 12's nftables package ships it.
const debianNftablesConf = `#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
`

// debianRulesV4 is an /etc/iptables/rules.v4 as iptables-persistent saves it.
const debianRulesV4 = `# Generated by iptables-save v1.8.9 (nf_tables) on Tue Dec  2 07:00:00 2025
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
COMMIT
# Completed on Tue Dec  2 07:00:00 2025
`

// fakeSystemctl is a systemctl for units whose is-enabled state is in the file state
// ("missing": the unit does not exist); enable and disable change it, every call is
// logged to the file log, and show prints Debian's ExecStart of nftables.service.
type fakeSystemctl struct{ path, state, log string }

func newFakeSystemctl(t *testing.T, state string) fakeSystemctl {
	t.Helper()
	dir := t.TempDir()
	f := fakeSystemctl{filepath.Join(dir, "systemctl"), filepath.Join(dir, "state"), filepath.Join(dir, "log")}
	script := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %[2]s
case "$1" in
is-enabled)
	if [ "$(cat %[1]s)" = missing ]; then echo "Failed to get unit file state for $2: No such file or directory" >&2; exit 1; fi
	cat %[1]s ;;
show) echo '{ path=/usr/sbin/nft ; argv[]=/usr/sbin/nft -f /etc/nftables.conf ; ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; status=0/0 }' ;;
enable) echo enabled > %[1]s ;;
disable) echo disabled > %[1]s ;;
esac
`, f.state, f.log)
	if err := os.WriteFile(f.path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.state, []byte(state+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fakeSystemctl) State() string {
	b, _ := os.ReadFile(f.state)
	return strings.TrimSpace(string(b))
}

func (f fakeSystemctl) Calls() string {
	b, _ := os.ReadFile(f.log)
	return string(b)
}

// etcTree makes an etc_dir holding files (relative path -> content).
func etcTree(t *testing.T, files map[string]string) string {
	t.Helper()
	etc := filepath.Join(t.TempDir(), "etc")
	for rel, content := range files {
		path := filepath.Join(etc, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	return etc
}

// snapshot is every file and directory under root with its content ("<dir>" for one).
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			out[path] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(path)
		out[path] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runUndo runs the undo commands of changes, newest change first, as an operator would.
func runUndo(changes []kit.Change) error {
	for i := len(changes) - 1; i >= 0; i-- {
		var argvs [][]string
		switch u := changes[i].Detail["undo"].(type) {
		case []string:
			argvs = [][]string{u}
		case [][]string:
			argvs = u
		default:
			return fmt.Errorf("change %d (%s) has no undo: %#v", i, changes[i].Action, changes[i].Detail["undo"])
		}
		for _, argv := range argvs {
			if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("undo %q: %v: %s", argv, err, out)
			}
		}
	}
	return nil
}

func persistParams(port int, etc string, sc fakeSystemctl, extra string) string {
	return fmt.Sprintf(`{"port": %d, "persist": true, "etc_dir": %q, "systemctl_path": %q%s}`, port, etc, sc.path, extra)
}

func TestPersistFalseWritesNoBootFilesAndAsksSystemctlNothing(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	etc := etcTree(t, map[string]string{"nftables.conf": debianNftablesConf})
	sc := newFakeSystemctl(t, "disabled")
	before := snapshot(t, etc)
	var r *kit.Report
	err := netnstest.Run(ns, func() error {
		p, err := moduletest.ParseParams(declaration, fmt.Sprintf(`{"port": 80, "etc_dir": %q, "systemctl_path": %q}`, etc, sc.path))
		if err != nil {
			return err
		}
		r = kit.NewTestReport()
		return run(context.Background(), p, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, etc); !reflect.DeepEqual(after, before) {
		t.Errorf("etc changed without persist: %v -> %v", before, after)
	}
	if calls := sc.Calls(); calls != "" {
		t.Errorf("systemctl was called without persist: %q", calls)
	}
	if ch := r.Changes(); len(ch) != 1 || ch[0].Action != "nft_add_rule" {
		t.Errorf("changes = %+v; want the live rule only", ch)
	}
	if files := r.Result()["persist_files"]; !reflect.DeepEqual(files, []string{}) {
		t.Errorf("persist_files = %#v; want empty", files)
	}
}

func TestPersistNftWritesTheTableAndTheIncludeEnablesTheUnitAndUndoPutsAllBack(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	etc := etcTree(t, map[string]string{"nftables.conf": debianNftablesConf})
	sc := newFakeSystemctl(t, "disabled")
	original := snapshot(t, etc)
	conf, dropIn := filepath.Join(etc, "nftables.conf"), filepath.Join(etc, "nftables.d", "local.nft")
	var first, second *kit.Report
	err := netnstest.Run(ns, func() error {
		for i, raw := range []string{persistParams(80, etc, sc, ""), persistParams(53, etc, sc, `, "protocol": "udp", "action": "reject"`)} {
			p, err := moduletest.ParseParams(declaration, raw)
			if err != nil {
				return err
			}
			r := kit.NewTestReport()
			if err := run(context.Background(), p, r); err != nil {
				return fmt.Errorf("run %d: %w", i, err)
			}
			if i == 0 {
				first = r
			} else {
				second = r
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	table80 := "table inet filter_local {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n" +
		"\t\ttcp flags & (fin|syn|rst|ack) == syn tcp dport 80 drop\n\t}\n}\n"
	table53 := "\ntable inet filter_local {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n" +
		"\t\tudp dport 53 reject\n\t}\n}\n"
	if b, _ := os.ReadFile(dropIn); string(b) != table80+table53 {
		t.Errorf("%s = %q; want %q", dropIn, b, table80+table53)
	}
	include := `include "` + dropIn + `"`
	if b, _ := os.ReadFile(conf); string(b) != debianNftablesConf+include+"\n" {
		t.Errorf("%s = %q; want Debian's with the include appended", conf, b)
	}
	if st, _ := os.Stat(conf); st.Mode().Perm() != 0o755 {
		t.Errorf("%s mode = %v; want it kept", conf, st.Mode().Perm())
	}
	if sc.State() != "enabled" {
		t.Errorf("nftables.service is %q; want enabled", sc.State())
	}
	if got := first.Result()["persist_files"]; !reflect.DeepEqual(got, []string{dropIn, conf}) {
		t.Errorf("persist_files = %v", got)
	}

	// the first run: the live rule, the new drop-in (and its directory), the include, the unit
	ch := first.Changes()
	if len(ch) != 4 {
		t.Fatalf("changes = %+v; want 4", ch)
	}
	if ch[0].Action != "nft_add_rule" || ch[1].Action != "create_file" || ch[2].Action != "edit_file" || ch[3].Action != "systemctl_enable" {
		t.Fatalf("actions = %s %s %s %s", ch[0].Action, ch[1].Action, ch[2].Action, ch[3].Action)
	}
	if ch[1].Path != dropIn || !reflect.DeepEqual(ch[1].Detail["undo"], [][]string{{"rm", "-f", dropIn}, {"rmdir", filepath.Dir(dropIn)}}) {
		t.Errorf("drop-in change = %+v", ch[1])
	}
	if ch[2].Path != conf || ch[2].Before != debianNftablesConf ||
		!reflect.DeepEqual(ch[2].Detail["lines_added"], []string{include}) ||
		!reflect.DeepEqual(ch[2].Detail["line_numbers"], []int{16}) ||
		!reflect.DeepEqual(ch[2].Detail["undo"], [][]string{{"truncate", "-s", fmt.Sprint(len(debianNftablesConf)), conf}}) {
		t.Errorf("nftables.conf change = %+v", ch[2])
	}
	wantUnit := kit.Change{
		Action: "systemctl_enable", Path: "nftables.service",
		Before: map[string]any{"enabled": "disabled"}, After: map[string]any{"enabled": "enabled"},
		Detail: map[string]any{"argv": []string{sc.path, "enable", "nftables.service"}, "undo": [][]string{{sc.path, "disable", "nftables.service"}}},
	}
	if !reflect.DeepEqual(ch[3], wantUnit) {
		t.Errorf("unit change = %+v; want %+v", ch[3], wantUnit)
	}
	// the second: the table appended to the drop-in; the include and the unit are there already
	ch2 := second.Changes()
	if len(ch2) != 2 || ch2[1].Action != "edit_file" || ch2[1].Path != dropIn || ch2[1].Before != table80 ||
		!reflect.DeepEqual(ch2[1].Detail["undo"], [][]string{{"truncate", "-s", fmt.Sprint(len(table80)), dropIn}}) {
		t.Errorf("second run's changes = %+v", ch2)
	}

	// the next boot: nftables.service's `nft -f /etc/nftables.conf` in a fresh namespace
	boot := netnstest.New(t)
	if out, err := netnstest.Command(boot, "nft", "-f", conf).CombinedOutput(); err != nil {
		t.Fatalf("nft -f %s: %v: %s", conf, err, out)
	}
	out, err := netnstest.Command(boot, "nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"table inet filter {", "tcp dport 80 drop", "udp dport 53 reject"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ruleset after loading %s lacks %q:\n%s", conf, want, out)
		}
	}

	// undo, newest first: the files are as they were, the unit disabled again
	if err := netnstest.Run(ns, func() error { return runUndo(append(first.Changes(), second.Changes()...)) }); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, etc); !reflect.DeepEqual(after, original) {
		t.Errorf("after undo etc is %v; want %v", after, original)
	}
	if sc.State() != "disabled" {
		t.Errorf("after undo nftables.service is %q; want disabled", sc.State())
	}
	if out, err := netnstest.Command(ns, "nft", "list", "table", nftFamily, nftTable).CombinedOutput(); err != nil || strings.Contains(string(out), "dport") {
		t.Errorf("live table after undo: %v: %s; want no rule left", err, out)
	}
}

func TestPersistNftKeepsAnIncludeThatIsThereAndAnEnabledUnit(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	etc := etcTree(t, map[string]string{"nftables.conf": debianNftablesConf, "nftables.d/ssh.nft": "# nothing\n"})
	conf := filepath.Join(etc, "nftables.conf")
	withGlob := debianNftablesConf + "\ninclude \"" + filepath.Join(etc, "nftables.d") + "/*.nft\"\n"
	if err := os.WriteFile(conf, []byte(withGlob), 0o755); err != nil {
		t.Fatal(err)
	}
	sc := newFakeSystemctl(t, "enabled")
	var r *kit.Report
	err := netnstest.Run(ns, func() error {
		p, err := moduletest.ParseParams(declaration, persistParams(8080, etc, sc, ""))
		if err != nil {
			return err
		}
		r = kit.NewTestReport()
		return run(context.Background(), p, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(conf); string(b) != withGlob {
		t.Errorf("nftables.conf changed although it includes nftables.d/*.nft: %q", b)
	}
	ch := r.Changes()
	if len(ch) != 2 || ch[1].Action != "create_file" || ch[1].Path != filepath.Join(etc, "nftables.d", "local.nft") {
		t.Errorf("changes = %+v; want the live rule and the new drop-in only", ch)
	}
	if strings.Contains(sc.Calls(), "enable nftables") {
		t.Errorf("systemctl calls %q; want no enable of an enabled unit", sc.Calls())
	}
}

func TestPersistFailsBeforeAnyChangeWhenNothingLoadsRulesAtBoot(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	for _, c := range []struct{ state, want string }{
		{"missing", `systemctl is-enabled nftables.service says "unknown" (Failed to get unit file state for nftables.service: No such file or directory); install the nftables package, or set persist: false`},
		{"masked", "nftables.service is masked"},
		{"static", `systemctl is-enabled nftables.service says "static"`},
	} {
		etc := etcTree(t, map[string]string{"nftables.conf": debianNftablesConf})
		before := snapshot(t, etc)
		sc := newFakeSystemctl(t, c.state)
		var r *kit.Report
		err := netnstest.Run(ns, func() error {
			p, err := moduletest.ParseParams(declaration, persistParams(80, etc, sc, `, "backend": "nft"`))
			if err != nil {
				return err
			}
			r = kit.NewTestReport()
			return run(context.Background(), p, r)
		})
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "persist: ") {
			t.Errorf("%s: run = %v; want an error containing %q", c.state, err, c.want)
		}
		if len(r.Changes()) != 0 || !reflect.DeepEqual(snapshot(t, etc), before) {
			t.Errorf("%s: changes %+v / files changed; want nothing done", c.state, r.Changes())
		}
		if out, err := netnstest.Command(ns, "nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), nftTable) {
			t.Errorf("%s: live tables %q, %v; want no rule added", c.state, out, err)
		}
	}
	etc := etcTree(t, nil)
	p := moduletest.Params(t, declaration, fmt.Sprintf(`{"port": 80, "persist": true, "backend": "nft", "etc_dir": %q, "systemctl_path": %q}`,
		etc, filepath.Join(t.TempDir(), "systemctl")))
	if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.HasPrefix(err.Error(), "persist: systemctl not found: ") {
		t.Errorf("run without systemctl = %v; want persist: systemctl not found", err)
	}
}

func TestPersistNftPutsTheFilesBackWhenTheConfigurationWouldNotLoad(t *testing.T) {
	needNft(t)
	ns := netnstest.New(t)
	broken := debianNftablesConf + "table inet filter {\n" // an admin's half-finished edit
	etc := etcTree(t, map[string]string{"nftables.conf": broken})
	before := snapshot(t, etc)
	sc := newFakeSystemctl(t, "disabled")
	var r *kit.Report
	err := netnstest.Run(ns, func() error {
		p, err := moduletest.ParseParams(declaration, persistParams(80, etc, sc, ""))
		if err != nil {
			return err
		}
		r = kit.NewTestReport()
		return run(context.Background(), p, r)
	})
	if err == nil || !strings.Contains(err.Error(), "nft -c -f "+filepath.Join(etc, "nftables.conf")+" fails") {
		t.Fatalf("run = %v; want nft -c failing", err)
	}
	if after := snapshot(t, etc); !reflect.DeepEqual(after, before) {
		t.Errorf("files not put back: %v", after)
	}
	if ch := r.Changes(); len(ch) != 1 || ch[0].Action != "nft_add_rule" || sc.State() != "disabled" {
		t.Errorf("changes %+v, unit %s; want only the live rule recorded", ch, sc.State())
	}
}

// fakeIptables puts iptables, ip6tables and their -restore tools in a directory first in
// PATH: they log their arguments and succeed, except `-C` (no such rule yet).
func fakeIptables(t *testing.T) (log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "log")
	for _, name := range []string{"iptables", "ip6tables", "iptables-restore", "ip6tables-restore"} {
		script := fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >> %s\ncase \" $* \" in *\" -C \"*) exit 1 ;; esac\nexit 0\n", name, log)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	return log
}

func TestPersistIptablesPutsTheRuleFirstInRulesV4AndV6AndUndoPutsThemBack(t *testing.T) {
	log := fakeIptables(t)
	etc := etcTree(t, map[string]string{"iptables/rules.v4": debianRulesV4})
	original := snapshot(t, etc)
	sc := newFakeSystemctl(t, "enabled")
	r, err := moduletest.Run(t, declaration, run, map[string]any{
		"port": 8443, "persist": true, "backend": "iptables", "etc_dir": etc, "systemctl_path": sc.path,
	})
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := filepath.Join(etc, "iptables", "rules.v4"), filepath.Join(etc, "iptables", "rules.v6")
	rule := "-A INPUT -p tcp -m tcp --syn --dport 8443 -j DROP"
	wantV4 := strings.Replace(debianRulesV4, ":OUTPUT ACCEPT [0:0]\n", ":OUTPUT ACCEPT [0:0]\n"+rule+"\n", 1)
	if b, _ := os.ReadFile(v4); string(b) != wantV4 {
		t.Errorf("rules.v4 = %q; want %q", b, wantV4)
	}
	wantV6 := "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + rule + "\nCOMMIT\n"
	if b, _ := os.ReadFile(v6); string(b) != wantV6 {
		t.Errorf("rules.v6 = %q; want %q", b, wantV6)
	}
	calls, _ := os.ReadFile(log)
	for _, want := range []string{"iptables-restore --test " + v4, "ip6tables-restore --test " + v6} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("calls %q lack %q", calls, want)
		}
	}
	ch := r.Changes()
	var actions []string
	for _, c := range ch {
		actions = append(actions, c.Action)
	}
	if strings.Join(actions, " ") != "iptables_insert_rule iptables_insert_rule edit_file create_file" {
		t.Fatalf("actions = %v", actions)
	}
	if !reflect.DeepEqual(ch[2].Detail["undo"], [][]string{{"sed", "-i", "6,6d", v4}}) || ch[2].Before != debianRulesV4 {
		t.Errorf("rules.v4 change = %+v", ch[2])
	}
	if !reflect.DeepEqual(ch[3].Detail["undo"], [][]string{{"rm", "-f", v6}}) {
		t.Errorf("rules.v6 change = %+v", ch[3])
	}
	if strings.Contains(sc.Calls(), "\nenable") || strings.HasPrefix(sc.Calls(), "enable") {
		t.Errorf("systemctl %q; want netfilter-persistent left enabled as it was", sc.Calls())
	}
	if err := runUndo(ch); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, etc); !reflect.DeepEqual(after, original) {
		t.Errorf("after undo: %v; want %v", after, original)
	}
}

func TestPersistIptablesNamesWhatIsMissing(t *testing.T) {
	fakeIptables(t)
	for _, c := range []struct {
		state string
		files map[string]string
		want  string
	}{
		{"missing", map[string]string{"iptables/rules.v4": debianRulesV4}, `netfilter-persistent.service says "unknown"`},
		{"enabled", nil, "/iptables does not exist (netfilter-persistent loads rules.v4 and rules.v6 from it through iptables-persistent); install iptables-persistent"},
	} {
		etc := etcTree(t, c.files)
		before := snapshot(t, etc)
		sc := newFakeSystemctl(t, c.state)
		r, err := moduletest.Run(t, declaration, run, map[string]any{
			"port": 80, "persist": true, "backend": "iptables", "etc_dir": etc, "systemctl_path": sc.path,
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run = %v; want an error containing %q", err, c.want)
		}
		if len(r.Changes()) != 0 || !reflect.DeepEqual(snapshot(t, etc), before) {
			t.Errorf("changes %+v; want nothing done", r.Changes())
		}
	}
}

func TestAutoWithPersistTakesTheBackendWhoseBootServiceIsEnabled(t *testing.T) {
	needNft(t)
	fakeIptables(t)
	for _, c := range []struct{ nft, iptables, want string }{
		{"enabled", "enabled", "nft"},
		{"disabled", "enabled", "iptables"},
		{"disabled", "disabled", "auto"},
	} {
		dir := t.TempDir()
		script := fmt.Sprintf("#!/bin/sh\ncase \"$2\" in nftables.service) echo %s ;; *) echo %s ;; esac\n", c.nft, c.iptables)
		path := filepath.Join(dir, "systemctl")
		if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		p := moduletest.Params(t, declaration, fmt.Sprintf(`{"port": 80, "persist": true, "systemctl_path": %q}`, path))
		if got := bootBackend(context.Background(), p); got != c.want {
			t.Errorf("nftables %s, netfilter-persistent %s: backend %q; want %q", c.nft, c.iptables, got, c.want)
		}
	}
}
