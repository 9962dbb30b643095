package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func probe(t *testing.T, raw string) map[string]any {
	t.Helper()
	r := kit.NewTestReport()
	if err := run(context.Background(), moduletest.Params(t, declaration, raw), r); err != nil {
		t.Fatal(err)
	}
	return r.Result()
}

func TestVerifyFindingsKeepsErrorsAndWarningsWithTheirTarget(t *testing.T) {
	out := "/\n   [ ] target exists\n   [ ] UUID=1 translated to /dev/vda1\n/srv/data\n   [E] unreachable source: UUID=9f: No such file or directory\n   [W] recommended root FS passno is 1 (current is 2)\n   [E] unsupported filesystem type 'xfz'\n\n0 parse errors, 2 errors, 1 warning\n"
	want := []string{"/srv/data: unreachable source: UUID=9f: No such file or directory", "/srv/data: unsupported filesystem type 'xfz'"}
	errs, warnings := verifyFindings(out)
	if !reflect.DeepEqual(errs, want) || !reflect.DeepEqual(warnings, []string{"/srv/data: recommended root FS passno is 1 (current is 2)"}) {
		t.Errorf("verifyFindings = %q, %q; want %q and the warning", errs, warnings, want)
	}
}

// The real mount table of this process, and a real findmnt when util-linux is here.
func TestTheRootFilesystemAndARealFindmnt(t *testing.T) {
	dir := t.TempDir()
	fstab := filepath.Join(dir, "fstab")
	os.WriteFile(fstab, []byte("# test\nUUID=00000000-dead-beef-0000-000000000000 /srv/nowhere ext4 defaults,nofail 0 2\n"), 0o644)
	res := probe(t, `{"path": "/", "fstab": "`+fstab+`", "verify": false}`)
	if res["mounted"] != true || res["source"] == "" || res["in_fstab"] != false || res["fstab_ok"] != false || res["reason"] != "" {
		t.Errorf("/: %v", res)
	}
	res = probe(t, `{"path": "/srv/nowhere/", "fstab": "`+fstab+`", "verify": false}`)
	if res["mounted"] != false || res["in_fstab"] != true || res["fstab_fstype"] != "ext4" || res["fstab_options"] != "defaults,nofail" {
		t.Errorf("/srv/nowhere: %v", res)
	}
	if _, err := exec.LookPath("findmnt"); err != nil {
		t.Skip("no findmnt here (util-linux); the lab VM tier runs it")
	}
	res = probe(t, `{"path": "/srv/nowhere", "fstab": "`+fstab+`"}`)
	errs, _ := res["fstab_errors"].([]string)
	if res["fstab_ok"] != false || len(errs) == 0 || !strings.HasPrefix(errs[0], "/srv/nowhere: ") {
		t.Errorf("findmnt --verify of a missing UUID: ok %v, errors %q", res["fstab_ok"], errs)
	}
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("tmpfs "+dir+" tmpfs defaults 0 0\n"), 0o644)
	if res = probe(t, `{"path": "/", "fstab": "`+good+`"}`); res["fstab_ok"] != true {
		t.Errorf("findmnt --verify of a sound fstab: %v", res)
	}
}

func TestAMissingFstabOrTableIsAReasonNotAFailure(t *testing.T) {
	dir := t.TempDir()
	res := probe(t, `{"path": "/", "fstab": "`+dir+`/none", "mountinfo": "`+dir+`/none"}`)
	if reason, _ := res["reason"].(string); !strings.Contains(reason, "read the mount table") || !strings.Contains(reason, "none does not exist") || res["mounted"] != false {
		t.Errorf("result = %v", res)
	}
}
