package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func probe(t *testing.T, with map[string]any) (map[string]any, error) {
	t.Helper()
	r, err := moduletest.Run(t, declaration, run, with)
	return r.Result(), err
}

const sshdConfig = `# sshd_config
Port 22
#PermitRootLogin yes
PermitRootLogin no
PasswordAuthentication yes
permitrootlogin prohibit-password
`

func TestFileContainsCountsMatchingLinesAndReportsTheFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sshd_config")
	os.WriteFile(path, []byte(sshdConfig), 0o644)
	cases := []struct {
		with  map[string]any
		count int
		first string
		line  int
	}{
		{map[string]any{"pattern": `^\s*PermitRootLogin\s+no\b`}, 1, "PermitRootLogin no", 4},
		{map[string]any{"pattern": `^PermitRootLogin`, "ignore_case": true}, 2, "PermitRootLogin no", 4},
		{map[string]any{"text": "PermitRootLogin"}, 2, "#PermitRootLogin yes", 3},
		{map[string]any{"text": "PERMITROOTLOGIN", "ignore_case": true}, 3, "#PermitRootLogin yes", 3},
		{map[string]any{"pattern": `^Port 2222$`}, 0, "", 0},
	}
	for _, c := range cases {
		c.with["path"] = path
		res, err := probe(t, c.with)
		if err != nil {
			t.Fatalf("run(%v): %v", c.with, err)
		}
		if res["exists"] != true || res["matches"] != (c.count > 0) || res["count"] != c.count || res["first_line"] != c.first || res["line_number"] != c.line {
			t.Errorf("%v: result %v; want count %d, first %q at line %d", c.with, res, c.count, c.first, c.line)
		}
	}
}

func TestFileContainsOnAMissingFileIsAnObservation(t *testing.T) {
	res, err := probe(t, map[string]any{"path": filepath.Join(t.TempDir(), "nope"), "text": "x"})
	if err != nil || res["exists"] != false || res["matches"] != false || res["count"] != 0 {
		t.Errorf("result %v, %v; want exists false, no match, no error", res, err)
	}
}

func TestFileContainsRefusesBadQueries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	os.WriteFile(path, []byte("x\n"), 0o644)
	for _, c := range []struct {
		with map[string]any
		want string
	}{
		{map[string]any{"path": path}, "exactly one"},
		{map[string]any{"path": path, "text": "x", "pattern": "x"}, "exactly one"},
		{map[string]any{"path": path, "pattern": "(unclosed"}, "pattern:"},
		{map[string]any{"path": filepath.Dir(path), "text": "x"}, "is a directory"},
	} {
		if _, err := probe(t, c.with); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run(%v) = %v; want an error containing %q", c.with, err, c.want)
		}
	}
}

func TestFileContainsReadsLongLinesAndClipsTheReport(t *testing.T) {
	path := filepath.Join(t.TempDir(), "long")
	long := strings.Repeat("é", 300000) + "needle"
	os.WriteFile(path, []byte("short\n"+long+"\n"), 0o644)
	res, err := probe(t, map[string]any{"path": path, "text": "needle"})
	if err != nil {
		t.Fatal(err)
	}
	first := res["first_line"].(string)
	if res["line_number"] != 2 || len(first) > maxFirstLine || !strings.HasPrefix(long, first) || !json.Valid([]byte(`"`+first+`"`)) {
		t.Errorf("line %v, first_line of %d bytes; want line 2 clipped to %d bytes on a rune boundary", res["line_number"], len(first), maxFirstLine)
	}
}
