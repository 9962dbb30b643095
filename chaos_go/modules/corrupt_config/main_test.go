package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

const sshdConfig = "# sshd\nPort 22\nPermitRootLogin no\nPasswordAuthentication yes\nPort 2222\n"

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sshd_config")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestEdits(t *testing.T) {
	cases := []struct {
		name   string
		params map[string]any
		want   string
		before []string
		after  []string
		lines  []int
	}{
		{"replace first match", map[string]any{"action": "replace", "match": `^Port\s`, "text": "Port 2x2"},
			"# sshd\nPort 2x2\nPermitRootLogin no\nPasswordAuthentication yes\nPort 2222\n",
			[]string{"Port 22"}, []string{"Port 2x2"}, []int{2}},
		{"replace all matches", map[string]any{"action": "replace", "match": `^Port\s`, "text": "Port x", "all": true},
			"# sshd\nPort x\nPermitRootLogin no\nPasswordAuthentication yes\nPort x\n",
			[]string{"Port 22", "Port 2222"}, []string{"Port x", "Port x"}, []int{2, 5}},
		{"delete by line", map[string]any{"action": "delete", "line": 3},
			"# sshd\nPort 22\nPasswordAuthentication yes\nPort 2222\n",
			[]string{"PermitRootLogin no"}, []string{}, []int{3}},
		{"insert after match", map[string]any{"action": "insert", "match": "^PermitRootLogin", "text": "Match User *"},
			"# sshd\nPort 22\nPermitRootLogin no\nMatch User *\nPasswordAuthentication yes\nPort 2222\n",
			[]string{}, []string{"Match User *"}, []int{3}},
		{"insert before line", map[string]any{"action": "insert", "line": 1, "position": "before", "text": "Bogus directive"},
			"Bogus directive\n# sshd\nPort 22\nPermitRootLogin no\nPasswordAuthentication yes\nPort 2222\n",
			[]string{}, []string{"Bogus directive"}, []int{1}},
		{"append", map[string]any{"action": "insert", "text": "UsePAM maybe"},
			sshdConfig + "UsePAM maybe\n", []string{}, []string{"UsePAM maybe"}, []int{6}},
	}
	for _, c := range cases {
		path := writeConfig(t, sshdConfig)
		if err := os.Chown(path, 1234, 4321); err != nil {
			t.Fatal(err)
		}
		c.params["path"] = path
		r, err := moduletest.Run(t, declaration, run, c.params)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		got, _ := os.ReadFile(path)
		if string(got) != c.want {
			t.Errorf("%s: got %q; want %q", c.name, got, c.want)
		}
		res := r.Result()
		if !reflect.DeepEqual(res["before"], c.before) || !reflect.DeepEqual(res["after"], c.after) || !reflect.DeepEqual(res["line_numbers"], c.lines) {
			t.Errorf("%s: got before %q after %q lines %v; want %q %q %v", c.name, res["before"], res["after"], res["line_numbers"], c.before, c.after, c.lines)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		if st.Mode&07777 != 0o600 || st.Uid != 1234 || st.Gid != 4321 {
			t.Errorf("%s: got mode %o owner %d:%d; want 600 1234:4321", c.name, st.Mode&07777, st.Uid, st.Gid)
		}
		ch := r.Changes()
		if len(ch) != 1 || ch[0].Action != "edit_file" || ch[0].Before != sshdConfig {
			t.Errorf("%s: got changes %+v; want one edit_file with the original content", c.name, ch)
		}
	}
}

func TestKeepsCRLFAndMissingFinalNewline(t *testing.T) {
	path := writeConfig(t, "a=1\r\nb=2")
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "action": "replace", "match": "^b=2$", "text": "b=x"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "a=1\r\nb=x" {
		t.Errorf("got %q; want %q", got, "a=1\r\nb=x")
	}
}

func TestErrorsLeaveTheFileAlone(t *testing.T) {
	cases := []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"action": "replace", "match": "^Nope", "text": "x"}, "no line of"},
		{map[string]any{"action": "delete", "line": 99}, "line 99 does not exist"},
		{map[string]any{"action": "replace", "match": "^Port"}, "replace needs text"},
		{map[string]any{"action": "delete"}, "delete needs match or line"},
		{map[string]any{"action": "delete", "match": "x", "line": 1}, "not both"},
		{map[string]any{"action": "replace", "match": "(", "text": "x"}, "match:"},
		{map[string]any{"action": "insert", "text": "two\nlines"}, "single line"},
	}
	for _, c := range cases {
		path := writeConfig(t, sshdConfig)
		c.params["path"] = path
		_, err := moduletest.Run(t, declaration, run, c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v; want an error containing %q", c.params, err, c.want)
		}
		if got, _ := os.ReadFile(path); string(got) != sshdConfig {
			t.Errorf("%v: file changed to %q", c.params, got)
		}
	}
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": "/nonexistent/x", "action": "delete", "line": 1}); err == nil {
		t.Errorf("missing file: got no error; want one")
	}
}
