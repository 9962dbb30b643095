package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// lsattrFlags returns lsattr's flag column for path, or "" when lsattr is missing.
func lsattrFlags(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("lsattr", "-d", path).Output()
	if err != nil {
		return ""
	}
	return strings.Fields(string(out))[0]
}

func TestSetsAndRemovesImmutableAndAppendOnly(t *testing.T) {
	// t.TempDir() is on the root filesystem here (ext4), which supports both flags.
	for _, flag := range []string{"i", "a"} {
		path := filepath.Join(t.TempDir(), "resolv.conf")
		os.WriteFile(path, []byte("nameserver 1.1.1.1\n"), 0o644)
		t.Cleanup(func() {
			moduletest.MustRun(t, declaration, run, map[string]any{"path": path, "flag": flag, "remove": true})
		})
		r := moduletest.MustRun(t, declaration, run, map[string]any{"path": path, "flag": flag})
		if r.Result()["before"] != "" || r.Result()["after"] != flag {
			t.Fatalf("+%s: got %v; want before \"\" after %q", flag, r.Result(), flag)
		}
		if ls := lsattrFlags(t, path); ls != "" && !strings.Contains(ls, flag) {
			t.Errorf("+%s: lsattr shows %q", flag, ls)
		}
		_, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
		if !errorsIsEPERM(err) {
			t.Errorf("+%s: truncating open got %v; want EPERM", flag, err)
		}
		if ch := r.Changes(); len(ch) != 1 || ch[0].Before != "" || ch[0].After != flag {
			t.Errorf("+%s: changes %+v", flag, ch)
		}
		r = moduletest.MustRun(t, declaration, run, map[string]any{"path": path, "flag": flag, "remove": true})
		if r.Result()["before"] != flag || r.Result()["after"] != "" {
			t.Errorf("-%s: got %v; want before %q after \"\"", flag, r.Result(), flag)
		}
		if ls := lsattrFlags(t, path); strings.Contains(ls, flag) {
			t.Errorf("-%s: lsattr still shows %q", flag, ls)
		}
		if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			t.Errorf("-%s: write after removal: %v", flag, err)
		}
	}
}

func errorsIsEPERM(err error) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == syscall.EPERM
}
