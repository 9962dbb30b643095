package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// selinuxfs as the kernel lays it out, in a folder: enforce, booleans/, commit_pending_bools.
func fakeSelinuxfs(t *testing.T) string {
	fs := t.TempDir()
	os.WriteFile(filepath.Join(fs, "enforce"), []byte("1"), 0o644)
	os.Mkdir(filepath.Join(fs, "booleans"), 0o755)
	os.WriteFile(filepath.Join(fs, "booleans", "httpd_can_network_connect"), []byte("1 1"), 0o644)
	return fs
}

func TestSwitchesABooleanOffAndRecordsTheWayBack(t *testing.T) {
	fs := fakeSelinuxfs(t)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"name": "httpd_can_network_connect", "selinuxfs": "`+fs+`"}`)
	if err := run(context.Background(), p, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(fs, "booleans", "httpd_can_network_connect"))
	if string(b) != "0" || r.Result()["before"] != true {
		t.Errorf("boolean %q, result %v", b, r.Result())
	}
	if c := r.Changes(); len(c) != 1 || strings.Join(c[0].Detail["undo"].([][]string)[0], " ") != "setsebool httpd_can_network_connect 1" {
		t.Errorf("changes = %+v", c)
	}
}

func TestWithoutSelinuxTheStepSaysSo(t *testing.T) {
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"name": "httpd_can_network_connect", "selinuxfs": "`+t.TempDir()+`"}`)
	if err := run(context.Background(), p, r); err == nil || !strings.Contains(err.Error(), "SELinux is not enabled") || len(r.Changes()) != 0 {
		t.Errorf("run = %v, changes %v", err, r.Changes())
	}
}
