package main

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

const resolv = "# generated\nsearch exam.lan\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions edns0\n"

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestEdits(t *testing.T) {
	cases := []struct {
		name    string
		params  map[string]any
		want    string
		servers []string
	}{
		{"replace nameservers", map[string]any{"nameservers": []any{"192.0.2.53"}},
			"# generated\nsearch exam.lan\nnameserver 192.0.2.53\noptions edns0\n", []string{"192.0.2.53"}},
		{"prepend nameservers", map[string]any{"nameservers": []any{"192.0.2.53", "2001:db8::53"}, "mode": "prepend"},
			"# generated\nsearch exam.lan\nnameserver 192.0.2.53\nnameserver 2001:db8::53\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions edns0\n",
			[]string{"192.0.2.53", "2001:db8::53", "10.0.0.2", "10.0.0.3"}},
		{"replace search", map[string]any{"search": []any{"wrong.lan"}},
			"# generated\nsearch wrong.lan\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions edns0\n", []string{"10.0.0.2", "10.0.0.3"}},
		{"prepend search", map[string]any{"search": []any{"wrong.lan"}, "mode": "prepend"},
			"# generated\nsearch wrong.lan exam.lan\nnameserver 10.0.0.2\nnameserver 10.0.0.3\noptions edns0\n", []string{"10.0.0.2", "10.0.0.3"}},
	}
	for _, c := range cases {
		dir := t.TempDir()
		// A symlink, like systemd-resolved's /etc/resolv.conf.
		target := filepath.Join(dir, "stub-resolv.conf")
		os.WriteFile(target, []byte(resolv), 0o644)
		link := filepath.Join(dir, "resolv.conf")
		os.Symlink(target, link)
		c.params["path"] = link
		p, err := kit.NewParams(declaration, c.params)
		if err != nil {
			t.Fatal(err)
		}
		r := kit.NewTestReport()
		if err := run(context.Background(), p, r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got, _ := os.ReadFile(target); string(got) != c.want {
			t.Errorf("%s: got %q; want %q", c.name, got, c.want)
		}
		if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s: the symlink was replaced by a file", c.name)
		}
		if got := r.Result()["nameservers_after"]; !reflect.DeepEqual(got, c.servers) {
			t.Errorf("%s: nameservers_after got %q; want %q", c.name, got, c.servers)
		}
		if !reflect.DeepEqual(r.Result()["nameservers_before"], []string{"10.0.0.2", "10.0.0.3"}) {
			t.Errorf("%s: nameservers_before got %q", c.name, r.Result()["nameservers_before"])
		}
		if ch := r.Changes(); len(ch) != 1 || ch[0].Before != resolv {
			t.Errorf("%s: change without the original content: %+v", c.name, ch)
		}
	}
}

func TestCreatesAMissingFileAndRejectsBadInput(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	p, _ := kit.NewParams(declaration, map[string]any{"path": path, "nameservers": []any{"192.0.2.1"}})
	r := kit.NewTestReport()
	if err := run(context.Background(), p, r); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "nameserver 192.0.2.1\n" {
		t.Errorf("got %q; want %q", got, "nameserver 192.0.2.1\n")
	}
	if ch := r.Changes(); len(ch) != 1 || ch[0].Action != "create_file" {
		t.Errorf("changes: got %+v; want create_file", ch)
	}
	for _, raw := range []map[string]any{{"path": path}, {"path": path, "nameservers": []any{"dns.google"}}} {
		p, _ := kit.NewParams(declaration, raw)
		if err := run(context.Background(), p, kit.NewTestReport()); err == nil {
			t.Errorf("%v: got no error; want one", raw)
		}
	}
}
