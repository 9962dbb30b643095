package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func files(t *testing.T) (dir, passwd, group string) {
	dir = t.TempDir()
	passwd, group = filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0::/root:/bin/bash\ncandidate:x:1000:1000::/home/candidate:/bin/bash\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\ncrontab:x:102:\n"), 0o644)
	return dir, passwd, group
}

func TestASystemJobIsAppendedOnceWithItsUserField(t *testing.T) {
	dir, passwd, group := files(t)
	path := filepath.Join(dir, "backup")
	os.WriteFile(path, []byte("SHELL=/bin/sh\n0 3 * * * root /usr/local/bin/backup"), 0o644) // no final newline
	raw := `{"schedule": "* * * * *", "command": "systemctl stop nginx", "path": "` + path + `", "passwd_file": "` + passwd + `", "group_file": "` + group + `"}`
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if want := "SHELL=/bin/sh\n0 3 * * * root /usr/local/bin/backup\n* * * * * root systemctl stop nginx\n"; string(got) != want {
		t.Errorf("crontab = %q; want %q", got, want)
	}
	if len(r.Changes()) != 1 || r.Result()["already"] != false {
		t.Errorf("changes %v, result %v", r.Changes(), r.Result())
	}
	again := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), again); err != nil || again.Result()["already"] != true || len(again.Changes()) != 0 {
		t.Errorf("second run: %v %v %v", err, again.Result(), again.Changes())
	}
}

func TestAUserCrontabIsTheUsersGroupCrontabMode0600WithoutAUserField(t *testing.T) {
	dir, passwd, group := files(t)
	spool := filepath.Join(dir, "crontabs")
	os.Mkdir(spool, 0o730)
	raw := `{"schedule": "@reboot", "command": "rm -f /etc/nginx/sites-enabled/default", "user": "candidate", "user_crontab": true, "crontab_dir": "` + spool + `", "passwd_file": "` + passwd + `", "group_file": "` + group + `"}`
	if os.Getuid() != 0 {
		t.Skip("chown to another user needs root")
	}
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(spool, "candidate")
	got, _ := os.ReadFile(path)
	var st syscall.Stat_t
	syscall.Stat(path, &st)
	if string(got) != "@reboot rm -f /etc/nginx/sites-enabled/default\n" || st.Mode&0o7777 != 0o600 || st.Uid != 1000 || st.Gid != 102 {
		t.Errorf("%s = %q, mode %o, owner %d:%d", path, got, st.Mode&0o7777, st.Uid, st.Gid)
	}
	if before := r.Changes()[0].Before.(map[string]any); before["exists"] != false {
		t.Errorf("before = %v; want no crontab", before)
	}
}

func TestNamesCronIgnoresAndUnknownUsersAreRefused(t *testing.T) {
	_, passwd, group := files(t)
	for raw, want := range map[string]string{
		`"path": "/etc/cron.d/job.sh"`: "cron ignores files in /etc/cron.d whose names have a dot",
		`"user": "nobody"`:             `"nobody" not found`,
	} {
		p := moduletest.Params(t, declaration, `{"schedule": "* * * * *", "command": "true", `+raw+`, "passwd_file": "`+passwd+`", "group_file": "`+group+`"}`)
		if err := run(context.Background(), p, kit.NewTestReport()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", raw, err, want)
		}
	}
	if _, err := moduletest.ParseParams(declaration, `{"schedule": "* * * *", "command": "true"}`); err == nil {
		t.Error("a four-field schedule was accepted")
	}
	if _, err := moduletest.ParseParams(declaration, `{"schedule": "* * * * *", "command": "date +%s"}`); err == nil {
		t.Error("a command with % was accepted")
	}
}
