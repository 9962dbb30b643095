package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestFileModeReportsOctalModeAndOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "shadow")
	os.WriteFile(file, nil, 0o600)
	if err := os.Chown(file, 0, 65534); err != nil {
		t.Fatal(err)
	}
	// After the chown, which clears setuid; syscall's mode is the raw st_mode bits.
	if err := syscall.Chmod(file, 0o4750); err != nil {
		t.Fatal(err)
	}
	res := moduletest.Probe(t, declaration, run, map[string]any{"path": file})
	if res["exists"] != true || res["mode"] != "4750" || res["uid"] != int64(0) || res["gid"] != int64(65534) || res["owner"] != "root" {
		t.Errorf("result = %v; want exists, mode 4750, uid 0 (root), gid 65534", res)
	}
	if g := res["group"]; g != "nogroup" && g != "nobody" && g != "65534" {
		t.Errorf("group = %v; want nogroup, nobody or 65534", g)
	}

	odd := filepath.Join(dir, "odd")
	os.WriteFile(odd, nil, 0o644)
	os.Chmod(odd, 0o644)
	os.Chown(odd, 54321, 54321)
	res = moduletest.Probe(t, declaration, run, map[string]any{"path": odd})
	if res["mode"] != "0644" || res["owner"] != "54321" || res["group"] != "54321" {
		t.Errorf("result = %v; want mode 0644 and numeric owner/group 54321", res)
	}
}

func TestFileModeFollowsSymlinksUnlessAsked(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	os.WriteFile(target, nil, 0o600)
	os.Chmod(target, 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if res := moduletest.Probe(t, declaration, run, map[string]any{"path": link}); res["mode"] != "0600" {
		t.Errorf("followed mode = %v; want 0600", res["mode"])
	}
	if res := moduletest.Probe(t, declaration, run, map[string]any{"path": link, "follow_symlinks": false}); res["mode"] != "0777" {
		t.Errorf("link's own mode = %v; want 0777", res["mode"])
	}
}

func TestFileModeOfAMissingPathIsAnObservation(t *testing.T) {
	res := moduletest.Probe(t, declaration, run, map[string]any{"path": filepath.Join(t.TempDir(), "missing")})
	if res["exists"] != false || res["mode"] != "" || res["uid"] != -1 {
		t.Errorf("result = %v; want exists false, empty mode, uid -1", res)
	}
}
