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

// Where SELinux is off (as on Debian), the step fails naming it and changes nothing.
func TestWithoutSelinuxTheStepSaysSoAndChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "index.html")
	os.WriteFile(path, []byte("hi\n"), 0o644)
	r := kit.NewTestReport()
	p := moduletest.Params(t, declaration, `{"path": "`+path+`", "type": "user_home_t", "selinuxfs": "`+dir+`/selinux"}`)
	err := run(context.Background(), p, r)
	if err == nil || !strings.Contains(err.Error(), "SELinux is not enabled on this machine") {
		t.Errorf("run = %v", err)
	}
	if len(r.Changes()) != 0 {
		t.Errorf("changes = %v", r.Changes())
	}
}
