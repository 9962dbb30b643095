package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fakeSystemctl answers like systemctl for one unit whose configuration is broken when
// dir/broken exists: a start or restart then fails as systemd says it.
func fakeSystemctl(t *testing.T) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	script := `#!/bin/sh
D=` + dir + `
echo "$*" >> "$D/calls.log"
case "$1" in
daemon-reload) ;;
is-active) cat "$D/state" 2>/dev/null || echo inactive; [ "$(cat "$D/state" 2>/dev/null)" = active ] ;;
start|restart)
	if [ -e "$D/broken" ]; then echo failed > "$D/state"
		echo "Job for $2.service failed because the control process exited with error code." >&2
		echo "See \"systemctl status $2.service\" and \"journalctl -xeu $2.service\" for details." >&2; exit 1; fi
	if [ -e "$D/dies" ]; then echo failed > "$D/state"; exit 0; fi
	echo active > "$D/state" ;;
show) echo "Result=exit-code"; echo "ExecMainCode=1"; echo "ExecMainStatus=203" ;;
*) echo "Unknown command verb $1." >&2; exit 1 ;;
esac
`
	path = filepath.Join(dir, "systemctl")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func TestARestartOfABrokenServiceFailsAsOnARealBoxAndTheStepSucceeds(t *testing.T) {
	systemctl, dir := fakeSystemctl(t)
	os.WriteFile(filepath.Join(dir, "state"), []byte("active\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "broken"), nil, 0o644)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"service": "nginx", "systemctl_path": "`+systemctl+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatalf("run: %v; want the failed restart reported, not raised", err)
	}
	res := r.Result()
	if res["succeeded"] != false || res["active"] != "failed" || res["before_active"] != "active" {
		t.Errorf("result = %v", res)
	}
	if msg, _ := res["message"].(string); !strings.HasPrefix(msg, "Job for nginx.service failed") || strings.Contains(msg, "\n") {
		t.Errorf("message = %q; want systemctl's words on one line", msg)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls.log"))
	if got := string(calls); got != "daemon-reload\nis-active nginx\nrestart nginx\nis-active nginx\n" {
		t.Errorf("calls:\n%s", got)
	}
	if undo := r.Changes()[0].Detail["undo"].([][]string); len(undo) != 1 || strings.Join(undo[0][1:], " ") != "start nginx" {
		t.Errorf("undo = %v; a service that ran and failed is started again (once its configuration is back)", undo)
	}
}

func TestStartingAStoppedServiceRecordsAStopToUndoIt(t *testing.T) {
	systemctl, dir := fakeSystemctl(t)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"service": "exam-worker", "action": "start", "daemon_reload": false, "systemctl_path": "`+systemctl+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatal(err)
	}
	if res := r.Result(); res["succeeded"] != true || res["active"] != "active" || res["message"] != "" {
		t.Errorf("result = %v", res)
	}
	c := r.Changes()[0]
	if c.Action != "systemctl_start" || len(c.Detail["undo"].([][]string)) != 1 || c.Detail["undo"].([][]string)[0][1] != "stop" {
		t.Errorf("change = %+v", c)
	}
	if calls, _ := os.ReadFile(filepath.Join(dir, "calls.log")); strings.Contains(string(calls), "daemon-reload") {
		t.Errorf("daemon_reload false still reloaded: %s", calls)
	}
}

func TestAnOptionIsNeverAUnitName(t *testing.T) {
	systemctl, _ := fakeSystemctl(t)
	p, err := moduletest.ParseParams(declaration, `{"service": "-H", "systemctl_path": "`+systemctl+`"}`)
	if err != nil {
		return
	}
	if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.Contains(err.Error(), "not a unit name") {
		t.Errorf("run = %v", err)
	}
}

// A simple service whose start command is not there: systemctl start returns 0 once it has
// forked, and the unit fails a moment later; that is a failed start too.
func TestAServiceThatDiesRightAfterItsStartIsAFailedStart(t *testing.T) {
	systemctl, dir := fakeSystemctl(t)
	os.WriteFile(filepath.Join(dir, "dies"), nil, 0o644)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"service": "exam-web", "systemctl_path": "`+systemctl+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatal(err)
	}
	res := r.Result()
	if res["succeeded"] != false || res["active"] != "failed" {
		t.Errorf("result = %v", res)
	}
	if msg := res["message"].(string); msg != "exam-web is failed right after the restart (Result=exit-code, ExecMainCode=1, ExecMainStatus=203)" {
		t.Errorf("message = %q", msg)
	}
}
