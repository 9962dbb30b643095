package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fakeSystemctl writes a shell script that answers like systemctl for one
// unit, keeping its state in dir and logging every call's arguments.
func fakeSystemctl(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls.log")
	script := `#!/bin/sh
D=` + dir + `
echo "$*" >> "$D/calls.log"
case "$1" in
is-active) if [ -e "$D/stopped" ]; then echo inactive; exit 3; fi; echo active ;;
is-enabled) if [ -e "$D/masked" ]; then echo masked; exit 1; fi
	if [ -e "$D/disabled" ]; then echo disabled; exit 1; fi; echo enabled ;;
stop) touch "$D/stopped" ;;
disable) touch "$D/stopped" "$D/disabled" ;;
mask) touch "$D/stopped" "$D/masked" ;;
*) echo "Unknown command verb $1." >&2; exit 1 ;;
esac
`
	path = filepath.Join(dir, "systemctl")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

func TestActionArgvIsTheExactSystemctlCommand(t *testing.T) {
	cases := map[string][]string{
		"stop":    {"/usr/bin/systemctl", "stop", "nginx.service"},
		"disable": {"/usr/bin/systemctl", "disable", "--now", "nginx.service"},
		"mask":    {"/usr/bin/systemctl", "mask", "--now", "nginx.service"},
	}
	for action, want := range cases {
		if got := actionArgv("/usr/bin/systemctl", action, "nginx.service"); !reflect.DeepEqual(got, want) {
			t.Errorf("actionArgv(%s) = %q; want %q", action, got, want)
		}
	}
}

func TestServiceNamePatternRejectsOptions(t *testing.T) {
	for _, bad := range []string{"--now", "-H", "a b", ""} {
		p, err := moduletest.ParseParams(declaration, `{"service": "`+bad+`"}`)
		if err != nil {
			continue // the kit already refuses it
		}
		if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.Contains(err.Error(), "is not a unit name") {
			t.Errorf("service %q: run = %v; want a 'not a unit name' error", bad, err)
		}
	}
	for _, good := range []string{"nginx", "getty@tty1.service", "systemd-journald.service", "dev-sda1.mount"} {
		moduletest.Params(t, declaration, `{"service": "`+good+`"}`)
	}
}

func TestMaskRunsSystemctlAndRecordsTheStateToRestore(t *testing.T) {
	systemctl, log := fakeSystemctl(t)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"service": "nginx", "action": "mask", "systemctl_path": "`+systemctl+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatalf("run: %v", err)
	}
	calls, _ := os.ReadFile(log)
	wantCalls := "is-active nginx\nis-enabled nginx\nmask --now nginx\nis-active nginx\nis-enabled nginx\n"
	if string(calls) != wantCalls {
		t.Errorf("systemctl calls = %q; want %q", calls, wantCalls)
	}
	res := r.Result()
	for k, want := range map[string]string{"before_active": "active", "before_enabled": "enabled", "active": "inactive", "enabled": "masked"} {
		if res[k] != want {
			t.Errorf("result[%s] = %v; want %q", k, res[k], want)
		}
	}
	ch := r.Changes()
	if len(ch) != 1 || ch[0].Action != "systemctl_mask" || ch[0].Path != "nginx" {
		t.Fatalf("changes = %+v; want one systemctl_mask of nginx", ch)
	}
	wantUndo := [][]string{{systemctl, "unmask", "nginx"}, {systemctl, "enable", "nginx"}, {systemctl, "start", "nginx"}}
	if got := ch[0].Detail["undo"]; !reflect.DeepEqual(got, wantUndo) {
		t.Errorf("undo = %q; want %q", got, wantUndo)
	}
}

func TestMissingSystemctlIsAClearError(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "systemctl")
	err := run(context.Background(), moduletest.Params(t, declaration, `{"service": "nginx", "systemctl_path": "`+missing+`"}`), kit.NewTestReport())
	if err == nil || !strings.HasPrefix(err.Error(), "systemctl not found: ") {
		t.Fatalf("run = %v; want an error starting %q", err, "systemctl not found: ")
	}
	err = run(context.Background(), moduletest.Params(t, declaration, `{"service": "nginx", "systemctl_path": "no-such-systemctl-here"}`), kit.NewTestReport())
	if err == nil || !strings.HasPrefix(err.Error(), "systemctl not found: ") {
		t.Fatalf("run = %v; want an error starting %q", err, "systemctl not found: ")
	}
}

func TestRealSystemctlWithoutSystemdFailsWithItsOwnMessage(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd is running here; this test must not stop a real unit")
	}
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("systemctl is not installed")
	}
	r := kit.NewTestReport()
	err := run(context.Background(), moduletest.Params(t, declaration, `{"service": "chaosrun-test-no-such-unit"}`), r)
	if err == nil {
		t.Fatal("run succeeded without systemd; want an error")
	}
	t.Logf("run: %v", err)
	if !strings.Contains(err.Error(), "systemctl stop chaosrun-test-no-such-unit: exit status") ||
		!strings.Contains(err.Error(), "booted with systemd") {
		t.Errorf("error = %q; want the command and systemctl's own message", err)
	}
	if len(r.Changes()) != 0 {
		t.Errorf("changes = %+v after a failure; want none", r.Changes())
	}
}
