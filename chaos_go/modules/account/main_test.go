package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

const today = 20424 // 2025-12-02

type files struct{ passwd, shadow, group string }

func write(t *testing.T, passwd, shadow, group string) files {
	t.Helper()
	dir := t.TempDir()
	f := files{filepath.Join(dir, "passwd"), filepath.Join(dir, "shadow"), filepath.Join(dir, "group")}
	for path, text := range map[string]string{f.passwd: passwd, f.shadow: shadow, f.group: group} {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func probe(t *testing.T, f files, user string) map[string]any {
	t.Helper()
	old := now
	now = func() int64 { return today }
	t.Cleanup(func() { now = old })
	return moduletest.Probe(t, declaration, run, map[string]any{
		"user": user, "passwd_file": f.passwd, "shadow_file": f.shadow, "group_file": f.group,
	})
}

const passwd = "root:x:0:0:root:/root:/bin/bash\n" +
	"candidate:x:1000:1000::/home/candidate:/bin/bash\n" +
	"locked:x:1001:1001::/home/locked:/usr/sbin/nologin\n"
const group = "root:x:0:\nadm:x:4:candidate,other\ncandidate:x:1000:\nsudo:x:27:candidate\nlocked:x:1001:\n"

func TestAHealthyAccount(t *testing.T) {
	f := write(t, passwd, "candidate:$y$j9T$abc:20400:0:99999:7:::\nlocked:!$y$x:20000:0:90:7::1:\n", group)
	res := probe(t, f, "candidate")
	want := map[string]any{
		"exists": true, "uid": 1000, "gid": 1000, "home": "/home/candidate", "shell": "/bin/bash",
		"groups": []string{"candidate", "adm", "sudo"}, "locked": false, "has_password": true,
		"expired": false, "expires": "", "must_change": false, "password_expired": false,
		"password_age_days": int64(24), "password_max_days": int64(99999), "reason": "",
	}
	for k, v := range want {
		if !reflect.DeepEqual(res[k], v) {
			t.Errorf("%s = %#v; want %#v", k, res[k], v)
		}
	}
}

func TestALockedExpiredAccountWithAnOldPassword(t *testing.T) {
	f := write(t, passwd, "locked:!$y$x:20000:0:90:7::1:\n", group)
	res := probe(t, f, "locked")
	if res["locked"] != true || res["has_password"] != true || res["expired"] != true || res["expires"] != "1970-01-02" {
		t.Errorf("result %v", res)
	}
	if res["password_expired"] != true || res["password_age_days"] != int64(today-20000) || res["shell"] != "/usr/sbin/nologin" {
		t.Errorf("result %v", res)
	}
}

func TestMustChangeAndNoPassword(t *testing.T) {
	f := write(t, passwd, "candidate:*:0:0:99999:7:::\n", group)
	res := probe(t, f, "candidate")
	if res["must_change"] != true || res["password_expired"] != true || res["has_password"] != false || res["locked"] != false {
		t.Errorf("result %v", res)
	}
}

func TestAMissingUserOrUnreadableShadowSaysWhy(t *testing.T) {
	f := write(t, passwd, "", group)
	if res := probe(t, f, "nobody-here"); res["exists"] != false || !strings.HasPrefix(res["reason"].(string), `no user "nobody-here" in `) {
		t.Errorf("result %v", res)
	}
	f.shadow = filepath.Join(t.TempDir(), "absent")
	res := probe(t, f, "candidate")
	if res["exists"] != true || res["locked"] != false || !strings.HasPrefix(res["reason"].(string), "cannot read "+f.shadow) {
		t.Errorf("result %v", res)
	}
}
