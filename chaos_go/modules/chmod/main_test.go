package main

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestDeclarationRefusesModesThatAreNotOctal(t *testing.T) {
	for _, bad := range []string{"999", "75", "0o644", "u+x", "07777x"} {
		if _, err := kit.NewParams(declaration, map[string]any{"path": "/x", "mode": bad}); err == nil {
			t.Errorf("mode %q: got no error; want a pattern error", bad)
		}
	}
}

func TestChangesModeIncludingSpecialBits(t *testing.T) {
	cases := []struct{ mode, want string }{{"0000", "0000"}, {"644", "0644"}, {"4755", "4755"}, {"1777", "1777"}}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "script.sh")
		os.WriteFile(path, []byte("#!/bin/sh\n"), 0o600)
		os.Chmod(path, 0o750)
		p, err := kit.NewParams(declaration, map[string]any{"path": path, "mode": c.mode})
		if err != nil {
			t.Fatal(err)
		}
		r := kit.NewTestReport()
		if err := run(context.Background(), p, r); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		syscall.Stat(path, &st)
		if got := octal(st.Mode & 07777); got != c.want {
			t.Errorf("mode %s: got %q; want %q", c.mode, got, c.want)
		}
		if r.Result()["before"] != "0750" || r.Result()["after"] != c.want {
			t.Errorf("result: got %v; want before 0750 after %s", r.Result(), c.want)
		}
		if ch := r.Changes(); len(ch) != 1 || ch[0].Before != "0750" || ch[0].Path != path {
			t.Errorf("changes: got %+v; want chmod with before 0750", ch)
		}
	}
}

func TestMissingPathFails(t *testing.T) {
	p, _ := kit.NewParams(declaration, map[string]any{"path": "/nonexistent/x", "mode": "644"})
	if err := run(context.Background(), p, kit.NewTestReport()); err == nil {
		t.Errorf("got no error; want one")
	}
}
