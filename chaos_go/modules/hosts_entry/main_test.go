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

const hosts = "127.0.0.1\tlocalhost\n10.0.0.5\tdb.exam.lan db # primary\n::1\tlocalhost ip6-localhost\n"

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func runWith(t *testing.T, raw map[string]any) (string, *kit.Report, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hosts")
	os.WriteFile(path, []byte(hosts), 0o644)
	raw["hosts_file"] = path
	p, err := kit.NewParams(declaration, raw)
	if err != nil {
		t.Fatal(err)
	}
	r := kit.NewTestReport()
	err = run(context.Background(), p, r)
	got, _ := os.ReadFile(path)
	return string(got), r, err
}

func TestAddAndRemove(t *testing.T) {
	cases := []struct {
		name    string
		params  map[string]any
		want    string
		changed int
		after   []string
	}{
		{"add ahead of the real entry", map[string]any{"hostname": "db.exam.lan", "address": "10.9.9.9"},
			"127.0.0.1\tlocalhost\n10.9.9.9\tdb.exam.lan\n10.0.0.5\tdb.exam.lan db # primary\n::1\tlocalhost ip6-localhost\n",
			1, []string{"10.9.9.9\tdb.exam.lan", "10.0.0.5\tdb.exam.lan db # primary"}},
		{"add a new name", map[string]any{"hostname": "web", "address": "fd00::1"},
			hosts + "fd00::1\tweb\n", 1, []string{"fd00::1\tweb"}},
		{"add what is already there", map[string]any{"hostname": "db", "address": "10.0.0.5"},
			hosts, 0, []string{"10.0.0.5\tdb.exam.lan db # primary"}},
		{"remove one alias", map[string]any{"hostname": "db", "action": "remove"},
			"127.0.0.1\tlocalhost\n10.0.0.5\tdb.exam.lan # primary\n::1\tlocalhost ip6-localhost\n", 1, []string{}},
		{"remove everywhere", map[string]any{"hostname": "localhost", "action": "remove"},
			"10.0.0.5\tdb.exam.lan db # primary\n::1\tip6-localhost\n", 2, []string{}},
		{"remove at one address", map[string]any{"hostname": "localhost", "action": "remove", "address": "::1"},
			"127.0.0.1\tlocalhost\n10.0.0.5\tdb.exam.lan db # primary\n::1\tip6-localhost\n", 1, []string{"127.0.0.1\tlocalhost"}},
	}
	for _, c := range cases {
		got, r, err := runWith(t, c.params)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: got %q; want %q", c.name, got, c.want)
		}
		if r.Result()["lines_changed"] != c.changed || !reflect.DeepEqual(r.Result()["after"], c.after) {
			t.Errorf("%s: got %v; want %d changed, after %q", c.name, r.Result(), c.changed, c.after)
		}
		if wantChanges := min(c.changed, 1); len(r.Changes()) != wantChanges {
			t.Errorf("%s: got %d changes; want %d", c.name, len(r.Changes()), wantChanges)
		} else if wantChanges == 1 && r.Changes()[0].Before != hosts {
			t.Errorf("%s: change without the original content", c.name)
		}
	}
}

func TestBadInput(t *testing.T) {
	for _, raw := range []map[string]any{
		{"hostname": "db"},
		{"hostname": "db", "address": "10.0.0.300"},
	} {
		got, _, err := runWith(t, raw)
		if err == nil || got != hosts {
			t.Errorf("%v: got %v and content %q; want an error and no change", raw, err, got)
		}
	}
	if _, err := kit.NewParams(declaration, map[string]any{"hostname": "bad name"}); err == nil {
		t.Errorf("hostname with a space: got no error; want a pattern error")
	}
}
