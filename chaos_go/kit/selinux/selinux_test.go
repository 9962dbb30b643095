package selinux

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWithTypeReplacesOnlyTheType(t *testing.T) {
	got, err := WithType("system_u:object_r:httpd_sys_content_t:s0:c0.c1023", "user_home_t")
	if err != nil || got != "system_u:object_r:user_home_t:s0:c0.c1023" {
		t.Errorf("WithType = %q, %v", got, err)
	}
	if _, err := WithType("unlabeled", "x_t"); err == nil {
		t.Error("a context without fields was accepted")
	}
}

func TestWithoutSelinuxfsItSaysSo(t *testing.T) {
	err := Enabled(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "SELinux is not enabled on this machine") {
		t.Errorf("Enabled = %v", err)
	}
}

func TestBooleansAreReadSetAndCommittedThroughSelinuxfs(t *testing.T) {
	fs := t.TempDir()
	os.Mkdir(filepath.Join(fs, "booleans"), 0o755)
	os.WriteFile(filepath.Join(fs, "booleans", "httpd_can_network_connect"), []byte("1 1"), 0o644)
	if on, err := Boolean(fs, "httpd_can_network_connect"); err != nil || !on {
		t.Fatalf("Boolean = %v, %v", on, err)
	}
	if err := SetBoolean(fs, "httpd_can_network_connect", false); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(fs, "booleans", "httpd_can_network_connect"))
	c, _ := os.ReadFile(filepath.Join(fs, "commit_pending_bools"))
	if string(b) != "0" || string(c) != "1" {
		t.Errorf("boolean file %q, commit %q", b, c)
	}
	if _, err := Boolean(fs, "no_such_bool"); err == nil || !strings.Contains(err.Error(), "has no boolean") {
		t.Errorf("unknown boolean: %v", err)
	}
}
