package main

import (
	"chaosrun/chaos_go/kit/sysctlconf"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
	"chaosrun/chaos_go/kit/kittest/netnstest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fakeSysctl makes a sysctl tree in a temp dir with one key file.
func fakeSysctl(t *testing.T, rel, content string) (root, path string) {
	t.Helper()
	root = t.TempDir()
	path = filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, path
}

func TestKeyPathFollowsSysctlsDotAndSlashRules(t *testing.T) {
	cases := map[string]string{
		"net.ipv4.ip_forward":              "/r/net/ipv4/ip_forward",
		"net.ipv4.conf.eth0/100.rp_filter": "/r/net/ipv4/conf/eth0.100/rp_filter",
		"net/ipv4/conf/eth0.100/rp_filter": "/r/net/ipv4/conf/eth0.100/rp_filter",
		"kernel.pid_max":                   "/r/kernel/pid_max",
	}
	for key, want := range cases {
		if got, err := sysctlconf.KeyPath("/r", key); err != nil || got != want {
			t.Errorf("sysctlconf.KeyPath(%q) = %q, %v; want %q", key, got, err, want)
		}
	}
	for _, bad := range []string{"net..ipv4", "net/../../etc/passwd", "kernel.", "a//b"} {
		if got, err := sysctlconf.KeyPath("/r", bad); err == nil {
			t.Errorf("sysctlconf.KeyPath(%q) = %q; want an error", bad, got)
		}
	}
}

func TestSysctlSetWritesTheValueAndRecordsTheOldOne(t *testing.T) {
	root, path := fakeSysctl(t, "net/ipv4/ip_local_port_range", "32768\t60999\n")
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_local_port_range", "value": "1024 1030", "proc_sys": "`+root+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatalf("run: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "1024 1030\n" {
		t.Errorf("file = %q; want %q", b, "1024 1030\n")
	}
	res := r.Result()
	if res["before"] != "32768 60999" || res["after"] != "1024 1030" || res["path"] != path {
		t.Errorf("result = %v", res)
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Before != "32768 60999" || ch[0].Path != "net.ipv4.ip_local_port_range" {
		t.Fatalf("changes = %+v", ch)
	}
	want := [][]string{{"sysctl", "-w", "net.ipv4.ip_local_port_range=32768 60999"}}
	if got := ch[0].Detail["undo"]; !reflect.DeepEqual(got, want) {
		t.Errorf("undo = %q; want %q", got, want)
	}
}

func TestSysctlSetRefusesMissingKeysDirectoriesAndEscapes(t *testing.T) {
	root, _ := fakeSysctl(t, "kernel/pid_max", "4194304\n")
	outside := filepath.Join(filepath.Dir(root), "escaped")
	for _, c := range []struct{ key, want string }{
		{"kernel.no_such_key", "no such key"},
		{"kernel", "is a directory"},
		{"kernel/../../escaped", "bad name"},
	} {
		p, err := moduletest.ParseParams(declaration, `{"key": "`+c.key+`", "value": "1", "proc_sys": "`+root+`"}`)
		if err != nil {
			continue // the declaration's pattern refused it already
		}
		if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("key %q: run = %v; want an error containing %q", c.key, err, c.want)
		}
	}
	if _, err := os.Stat(outside); err == nil {
		t.Errorf("%s was created outside the sysctl root", outside)
	}
	if _, err := os.Stat(filepath.Join(root, "kernel", "no_such_key")); err == nil {
		t.Error("a missing key's file was created")
	}
}

func TestSysctlSetChangesIPForwardInsideATestNamespaceOnly(t *testing.T) {
	ns := netnstest.New(t)
	hostBefore, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}

	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_forward", "value": "1"}`)
	err = netnstest.Run(ns, func() error { return run(context.Background(), p, r) })
	if err != nil {
		t.Fatalf("run in %s: %v", ns, err)
	}
	if res := r.Result(); res["before"] != "0" || res["after"] != "1" {
		t.Errorf("result = %v; want before 0 after 1 (a fresh namespace forwards nothing)", res)
	}
	out, err := netnstest.Command(ns, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("ip_forward in %s = %q, %v; want 1", ns, out, err)
	}
	if hostAfter, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); string(hostAfter) != string(hostBefore) {
		t.Errorf("host ip_forward changed from %q to %q", hostBefore, hostAfter)
	}
}

// bootRoot makes a root for persist: ROOT/etc/sysctl.d, ROOT/usr/lib/sysctl.d and a
// systemd-sysctl, plus files (relative path -> content).
func bootRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	all := map[string]string{"usr/lib/systemd/systemd-sysctl": "#!/bin/sh\n", "usr/lib/sysctl.d/50-pid-max.conf": "kernel.pid_max = 4194304\n"}
	for k, v := range files {
		all[k] = v
	}
	for rel, content := range all {
		path := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if content == "<none>" {
			os.Remove(path)
			continue
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc", "sysctl.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func persistRun(t *testing.T, procRoot, file, extra string) (*kit.Report, error) {
	t.Helper()
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_local_port_range", "value": "1024 1030", "proc_sys": "`+procRoot+`"`+
		`, "persist": true, "persist_file": "`+file+`"`+extra+`}`)
	r := kit.NewTestReport()
	return r, run(context.Background(), p, r)
}

func runUndo(t *testing.T, undo any) {
	t.Helper()
	for _, argv := range undo.([][]string) {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("undo %q: %v: %s", argv, err, out)
		}
	}
}

func TestPersistFalseWritesNothingToSysctlD(t *testing.T) {
	procRoot, _ := fakeSysctl(t, "net/ipv4/ip_local_port_range", "32768\t60999\n")
	root := bootRoot(t, nil)
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_local_port_range", "value": "1024 1030", "proc_sys": "`+procRoot+
		`", "persist_file": "`+root+`/etc/sysctl.d/60-local.conf"}`)
	r := kit.NewTestReport()
	if err := run(context.Background(), p, r); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "etc", "sysctl.d")); len(entries) != 0 {
		t.Errorf("sysctl.d holds %v without persist", entries)
	}
	if ch := r.Changes(); len(ch) != 1 || r.Result()["persist_file"] != "" {
		t.Errorf("changes %+v, result %v; want the live value only", ch, r.Result())
	}
}

func TestPersistCreatesTheSysctlDFileAndUndoRemovesIt(t *testing.T) {
	procRoot, path := fakeSysctl(t, "net/ipv4/ip_local_port_range", "32768\t60999\n")
	root := bootRoot(t, nil)
	file := filepath.Join(root, "etc", "sysctl.d", "60-local.conf")
	r, err := persistRun(t, procRoot, file, "")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "1024 1030\n" {
		t.Errorf("live value = %q", b)
	}
	if b, _ := os.ReadFile(file); string(b) != "net.ipv4.ip_local_port_range = 1024 1030\n" {
		t.Errorf("%s = %q", file, b)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v; want 0644", st.Mode().Perm())
	}
	ch := r.Changes()
	if len(ch) != 2 || ch[0].Action != "sysctl_set" || ch[1].Action != "create_file" || ch[1].Path != file ||
		!reflect.DeepEqual(ch[1].Detail["undo"], [][]string{{"rm", "-f", file}}) ||
		!reflect.DeepEqual(ch[1].Detail["lines_added"], []string{"net.ipv4.ip_local_port_range = 1024 1030"}) {
		t.Fatalf("changes = %+v", ch)
	}
	if r.Result()["persist_file"] != file {
		t.Errorf("persist_file = %v", r.Result()["persist_file"])
	}
	runUndo(t, ch[1].Detail["undo"])
	runUndo(t, [][]string{{"sh", "-c", `printf '%s\n' "$1" > "$2"`, "sh", "32768 60999", path}}) // sysctl -w on the fake tree
	if entries, _ := os.ReadDir(filepath.Join(root, "etc", "sysctl.d")); len(entries) != 0 {
		t.Errorf("after undo sysctl.d holds %v", entries)
	}
}

func TestPersistAppendsToAnExistingFileAndUndoTruncatesItBack(t *testing.T) {
	procRoot, _ := fakeSysctl(t, "net/ipv4/ip_local_port_range", "32768\t60999\n")
	existing := "# local tuning\nvm.swappiness = 10" // no final newline
	root := bootRoot(t, map[string]string{"etc/sysctl.d/60-local.conf": existing})
	file := filepath.Join(root, "etc", "sysctl.d", "60-local.conf")
	r, err := persistRun(t, procRoot, file, "")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(file); string(b) != existing+"\nnet.ipv4.ip_local_port_range = 1024 1030\n" {
		t.Errorf("%s = %q", file, b)
	}
	c := r.Changes()[1]
	if c.Action != "edit_file" || c.Before != existing || c.Detail["edit"] != "append" ||
		!reflect.DeepEqual(c.Detail["line_numbers"], []int{3}) ||
		!reflect.DeepEqual(c.Detail["undo"], [][]string{{"truncate", "-s", "33", file}}) {
		t.Fatalf("change = %+v", c)
	}
	runUndo(t, c.Detail["undo"])
	if b, _ := os.ReadFile(file); string(b) != existing {
		t.Errorf("after undo %s = %q; want %q", file, b, existing)
	}
}

func TestPersistFailsBeforeAnyChangeWhenTheValueWouldNotComeBackAtBoot(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		file  string // under the root
		want  string
	}{
		{"no systemd-sysctl", map[string]string{"usr/lib/systemd/systemd-sysctl": "<none>"}, "etc/sysctl.d/60-local.conf",
			"persist: nothing would apply ROOT/etc/sysctl.d/60-local.conf at boot: none of ROOT/usr/lib/systemd/systemd-sysctl, ROOT/lib/systemd/systemd-sysctl, ROOT/etc/init.d/procps, ROOT/etc/init.d/sysctl exists"},
		{"a later file sets it", map[string]string{"usr/lib/sysctl.d/99-ports.conf": "# x\n net.ipv4.ip_local_port_range=40000 50000\n"}, "etc/sysctl.d/60-local.conf",
			`persist: ROOT/usr/lib/sysctl.d/99-ports.conf sets net.ipv4.ip_local_port_range too ("net.ipv4.ip_local_port_range=40000 50000") and is read after 60-local.conf`},
		{"a later glob sets it", map[string]string{"etc/sysctl.d/70-all.conf": "-net.ipv4.ip_local_port_*= 1 2\n"}, "etc/sysctl.d/60-local.conf",
			"persist: ROOT/etc/sysctl.d/70-all.conf sets net.ipv4.ip_local_port_range too"},
		{"masked by /etc", map[string]string{"etc/sysctl.d/60-local.conf": "# masks the vendor's\n"}, "usr/lib/sysctl.d/60-local.conf",
			"persist: ROOT/usr/lib/sysctl.d/60-local.conf would not be read at boot: ROOT/etc/sysctl.d/60-local.conf has the same name and masks it"},
		{"a tmpfs directory", nil, "run/sysctl.d/60-local.conf", "persist: ROOT/run/sysctl.d/60-local.conf is not in a directory read at boot that survives a reboot"},
	} {
		procRoot, path := fakeSysctl(t, "net/ipv4/ip_local_port_range", "32768\t60999\n")
		root := bootRoot(t, c.files)
		before := map[string]string{}
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				before[p] = string(b)
			}
			return nil
		})
		r, err := persistRun(t, procRoot, filepath.Join(root, c.file), "")
		want := strings.ReplaceAll(c.want, "ROOT", root)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: run = %v; want %q...", c.name, err, want)
		}
		if b, _ := os.ReadFile(path); string(b) != "32768\t60999\n" || len(r.Changes()) != 0 {
			t.Errorf("%s: live value %q, changes %+v; want nothing changed", c.name, b, r.Changes())
		}
		after := map[string]string{}
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				b, _ := os.ReadFile(p)
				after[p] = string(b)
			}
			return nil
		})
		if !reflect.DeepEqual(after, before) {
			t.Errorf("%s: files changed: %v", c.name, after)
		}
	}
}

func TestPersistedFileIsAppliedBySystemdSysctlInATestNamespace(t *testing.T) {
	applier := "/usr/lib/systemd/systemd-sysctl"
	if _, err := os.Stat(applier); err != nil {
		t.Skipf("no %s: %v", applier, err)
	}
	ns := netnstest.New(t)
	root := bootRoot(t, nil)
	file := filepath.Join(root, "etc", "sysctl.d", "60-local.conf")
	p := moduletest.Params(t, declaration, `{"key": "net.ipv4.ip_forward", "value": "1", "persist": true, "persist_file": "`+file+`"}`)
	if err := netnstest.Run(ns, func() error { return run(context.Background(), p, kit.NewTestReport()) }); err != nil {
		t.Fatal(err)
	}
	// the next boot: a fresh namespace (ip_forward 0) and systemd-sysctl reading the file
	boot := netnstest.New(t)
	if out, err := netnstest.Command(boot, applier, file).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", applier, file, err, out)
	}
	out, err := netnstest.Command(boot, "cat", "/proc/sys/net/ipv4/ip_forward").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("ip_forward after systemd-sysctl = %q, %v; want 1", out, err)
	}
}
