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

func fakeSystemctl(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "calls.log")
	path = filepath.Join(dir, "systemctl")
	os.WriteFile(path, []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755)
	return path, log
}

func TestEachFaultWritesTheDropInSystemdWouldReadAndReloads(t *testing.T) {
	for _, c := range []struct{ params, file, want string }{
		{`"service": "nginx", "fault": "bad_exec"`, "nginx.service.d/override.conf", "[Service]\nExecStart=\nExecStart=/usr/sbin/nginx-daemon\n"},
		{`"service": "getty@tty1.service", "fault": "missing_dependency"`, "getty@tty1.service.d/override.conf", "[Unit]\nRequires=getty-backend.service\nAfter=getty-backend.service\n"},
		{`"service": "nginx", "fault": "nofile", "value": "8", "name": "limits.conf"`, "nginx.service.d/limits.conf", "[Service]\nLimitNOFILE=8\n"},
		{`"service": "cron.timer", "fault": "settings", "settings": "[Timer]\nOnCalendar=yearly"`, "cron.timer.d/override.conf", "[Timer]\nOnCalendar=yearly\n"},
	} {
		dir := t.TempDir()
		systemctl, log := fakeSystemctl(t)
		r := kit.NewTestReport()
		p := moduletest.Params(t, declaration, `{`+c.params+`, "unit_dir": "`+dir+`", "systemctl_path": "`+systemctl+`"}`)
		if err := run(context.Background(), p, r); err != nil {
			t.Fatalf("%s: %v", c.params, err)
		}
		got, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil || string(got) != c.want {
			t.Errorf("%s: %s = %q, %v; want %q", c.params, c.file, got, err, c.want)
		}
		if calls, _ := os.ReadFile(log); string(calls) != "daemon-reload\n" {
			t.Errorf("%s: systemctl calls %q; want one daemon-reload", c.params, calls)
		}
		ch := r.Changes()
		if len(ch) != 1 || ch[0].Before.(map[string]any)["exists"] != false {
			t.Errorf("%s: changes %+v; want one write recording that no drop-in was there", c.params, ch)
		}
		if made := ch[0].Detail["made_dirs"].([]string); len(made) != 1 || !strings.HasSuffix(made[0], ".d") {
			t.Errorf("%s: made_dirs = %v; want the UNIT.d folder", c.params, made)
		}
	}
}

func TestAnExistingDropInIsKeptForRestoreAndASecondRunChangesNothing(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "nginx.service.d"), 0o755)
	old := filepath.Join(dir, "nginx.service.d", "override.conf")
	os.WriteFile(old, []byte("[Service]\nRestart=always\n"), 0o644)
	systemctl, _ := fakeSystemctl(t)
	raw := `{"service": "nginx", "fault": "nofile", "unit_dir": "` + dir + `", "systemctl_path": "` + systemctl + `"}`
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatal(err)
	}
	before := r.Changes()[0].Before.(map[string]any)
	if before["content_base64"] != "W1NlcnZpY2VdClJlc3RhcnQ9YWx3YXlzCg==" || r.Result()["existed"] != true {
		t.Errorf("before = %v, result %v", before, r.Result())
	}
	again := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), again); err != nil {
		t.Fatal(err)
	}
	if len(again.Changes()) != 0 {
		t.Errorf("second run changed %+v; want nothing", again.Changes())
	}
}

func TestBadValuesAreRefusedBeforeAnythingIsWritten(t *testing.T) {
	dir := t.TempDir()
	systemctl, _ := fakeSystemctl(t)
	for raw, want := range map[string]string{
		`"service": "nginx", "fault": "settings"`:                            "needs settings",
		`"service": "nginx", "fault": "missing_dependency", "value": "-H x"`: "not a unit name",
		`"service": "-H", "fault": "nofile"`:                                 "not a unit name",
	} {
		p, err := moduletest.ParseParams(declaration, `{`+raw+`, "unit_dir": "`+dir+`", "systemctl_path": "`+systemctl+`"}`)
		if err != nil {
			continue
		}
		if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", raw, err, want)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left behind %v", entries)
	}
}
