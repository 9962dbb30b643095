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

const (
	passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1001:1001:Alice:/home/alice:/bin/bash\n"
	shadow = "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:0:99999:7:::\n"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// files writes passwd (0644) and shadow (0640, group 42 like Debian's shadow group).
func files(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	pw, sh := filepath.Join(dir, "passwd"), filepath.Join(dir, "shadow")
	os.WriteFile(pw, []byte(passwd), 0o644)
	os.WriteFile(sh, []byte(shadow), 0o640)
	os.Chown(sh, 0, 42)
	return pw, sh
}

func runAction(t *testing.T, user, action, pw, sh string) (*kit.Report, error) {
	t.Helper()
	p, err := kit.NewParams(declaration, map[string]any{"user": user, "action": action, "passwd_file": pw, "shadow_file": sh})
	if err != nil {
		t.Fatal(err)
	}
	r := kit.NewTestReport()
	return r, run(context.Background(), p, r)
}

func TestActions(t *testing.T) {
	cases := []struct {
		action, file, want, before, after string
	}{
		{"lock", "shadow", strings.Replace(shadow, "alice:$6$", "alice:!$6$", 1), "<hash>", "!<hash>"},
		{"expire", "shadow", strings.Replace(shadow, "alice:$6$salt$hash:19000:0:99999:7:::", "alice:$6$salt$hash:19000:0:99999:7::1:", 1), "", "1"},
		{"must_change", "shadow", strings.Replace(shadow, "alice:$6$salt$hash:19000:", "alice:$6$salt$hash:0:", 1), "19000", "0"},
		{"nologin", "passwd", strings.Replace(passwd, "/home/alice:/bin/bash", "/home/alice:/usr/sbin/nologin", 1), "/bin/bash", "/usr/sbin/nologin"},
	}
	for _, c := range cases {
		pw, sh := files(t)
		r, err := runAction(t, "alice", c.action, pw, sh)
		if err != nil {
			t.Fatalf("%s: %v", c.action, err)
		}
		path := map[string]string{"passwd": pw, "shadow": sh}[c.file]
		if got, _ := os.ReadFile(path); string(got) != c.want {
			t.Errorf("%s: got %q; want %q", c.action, got, c.want)
		}
		res := r.Result()
		if res["before"] != c.before || res["after"] != c.after || res["changed"] != true {
			t.Errorf("%s: result %v; want before %q after %q changed", c.action, res, c.before, c.after)
		}
		var st syscall.Stat_t
		syscall.Stat(sh, &st)
		if st.Mode&07777 != 0o640 || st.Gid != 42 {
			t.Errorf("%s: shadow mode %o gid %d; want 640 and 42", c.action, st.Mode&07777, st.Gid)
		}
		for _, ch := range r.Changes() {
			if strings.Contains(ch.Before.(string)+ch.After.(string), "salt") {
				t.Errorf("%s: the hash leaked into the change record", c.action)
			}
		}
	}
}

func TestLockTwiceChangesNothingAndUnknownUserFails(t *testing.T) {
	pw, sh := files(t)
	if _, err := runAction(t, "alice", "lock", pw, sh); err != nil {
		t.Fatal(err)
	}
	r, err := runAction(t, "alice", "lock", pw, sh)
	if err != nil || r.Result()["changed"] != false || len(r.Changes()) != 0 {
		t.Errorf("second lock: got %v %v %v; want unchanged", err, r.Result(), r.Changes())
	}
	if _, err := runAction(t, "bob", "nologin", pw, sh); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown user: got %v; want not found", err)
	}
	if got, _ := os.ReadFile(pw); string(got) != passwd {
		t.Errorf("passwd changed: %q", got)
	}
}

func TestShownHidesHashes(t *testing.T) {
	for in, want := range map[string]string{"$y$j9T$x$y": "<hash>", "!$6$a$b": "!<hash>", "!!": "!!", "*": "*", "!*": "!*", "": ""} {
		if got := shown("password", in); got != want {
			t.Errorf("shown(%q): got %q; want %q", in, got, want)
		}
	}
}
