package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fixture writes a passwd and group file and a target owned by 0:0.
func fixture(t *testing.T) (dir, target string) {
	t.Helper()
	dir = t.TempDir()
	os.WriteFile(filepath.Join(dir, "passwd"), []byte("root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www:/var/www:/usr/sbin/nologin\nalice:x:1001:1001::/home/alice:/bin/bash\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "group"), []byte("root:x:0:\nwww-data:x:33:\nexam:x:2000:alice\n"), 0o644)
	target = filepath.Join(dir, "index.html")
	os.WriteFile(target, []byte("hi"), 0o644)
	os.Chown(target, 0, 0)
	return dir, target
}

func TestChangesOwnerAndGroup(t *testing.T) {
	cases := []struct {
		user, group string
		want        string
	}{
		{"alice", "", "1001:0"},
		{"", "exam", "0:2000"},
		{"www-data", "www-data", "33:33"},
		{"4242", "4343", "4242:4343"},
	}
	for _, c := range cases {
		dir, target := fixture(t)
		raw := map[string]any{"path": target, "passwd_file": filepath.Join(dir, "passwd"), "group_file": filepath.Join(dir, "group")}
		if c.user != "" {
			raw["user"] = c.user
		}
		if c.group != "" {
			raw["group"] = c.group
		}
		p, err := kit.NewParams(declaration, raw)
		if err != nil {
			t.Fatal(err)
		}
		r := kit.NewTestReport()
		if err := run(context.Background(), p, r); err != nil {
			t.Fatalf("%v: %v", raw, err)
		}
		var st syscall.Stat_t
		syscall.Stat(target, &st)
		if got := fmt.Sprintf("%d:%d", st.Uid, st.Gid); got != c.want {
			t.Errorf("%s/%s: got %q; want %q", c.user, c.group, got, c.want)
		}
		res := r.Result()
		if got := fmt.Sprintf("%v:%v>%v:%v", res["uid_before"], res["gid_before"], res["uid_after"], res["gid_after"]); got != "0:0>"+c.want {
			t.Errorf("result: got %q; want %q", got, "0:0>"+c.want)
		}
		if ch := r.Changes(); len(ch) != 1 || fmt.Sprint(ch[0].Before) != "map[gid:0 uid:0]" {
			t.Errorf("changes: got %+v; want before uid 0 gid 0", ch)
		}
	}
}

func TestUnknownNamesAndMissingIDsFail(t *testing.T) {
	dir, target := fixture(t)
	cases := []struct {
		raw  map[string]any
		want string
	}{
		{map[string]any{"user": "bob"}, `"bob" not found`},
		{map[string]any{"group": "wheel"}, `"wheel" not found`},
		{map[string]any{}, "give user, group or both"},
	}
	for _, c := range cases {
		c.raw["path"] = target
		c.raw["passwd_file"] = filepath.Join(dir, "passwd")
		c.raw["group_file"] = filepath.Join(dir, "group")
		p, _ := kit.NewParams(declaration, c.raw)
		err := run(context.Background(), p, kit.NewTestReport())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v; want %q", c.raw, err, c.want)
		}
	}
}
