package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

func TestWriteFileReplacesContentKeepsModeAndRecordsTheOldContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nginx.conf")
	if err := os.WriteFile(path, []byte("worker_processes 1;\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	rep := moduletest.MustRun(t, declaration, run, map[string]any{"path": path, "content": "worker_processes one;\n"})
	if data, _ := os.ReadFile(path); string(data) != "worker_processes one;\n" {
		t.Fatalf("content %q", data)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v; the old 0640 must stay", st.Mode())
	}
	res := rep.Result()
	if res["existed"] != true || res["already"] != false || res["mode"] != "0640" {
		t.Errorf("result %v", res)
	}
	changes := rep.Changes()
	if len(changes) != 1 {
		t.Fatalf("changes %+v", changes)
	}
	before := changes[0].Before.(map[string]any)
	old, _ := base64.StdEncoding.DecodeString(before["content_base64"].(string))
	if string(old) != "worker_processes 1;\n" || before["mode"] != "0640" {
		t.Errorf("before %v", before)
	}
}

func TestWriteFileCreatesANewFileWithModeAndDirsAndSaysThereWasNone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "run.sh")
	rep := moduletest.MustRun(t, declaration, run, map[string]any{"path": path, "content": "#!/bin/sh\n", "mode": "4750", "make_dirs": true})
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o750 || st.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("stat %v, %v", st, err)
	}
	c := rep.Changes()[0]
	if c.Before.(map[string]any)["exists"] != false || len(c.Detail["made_dirs"].([]string)) != 2 {
		t.Errorf("change %+v", c)
	}
	if rep.Result()["existed"] != false || rep.Result()["mode"] != "4750" {
		t.Errorf("result %v", rep.Result())
	}
}

func TestWritingTheSameContentAgainChangesNothingAndSaysSo(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	with := map[string]any{"path": path, "content": "x\n", "mode": "0600"}
	moduletest.MustRun(t, declaration, run, with)
	again := moduletest.MustRun(t, declaration, run, with)
	if again.Result()["already"] != true || len(again.Changes()) != 0 {
		t.Errorf("result %v, changes %+v", again.Result(), again.Changes())
	}
}

func TestOwnerNamesAreLookedUpAndUnknownOnesRefused(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	if err := os.WriteFile(passwd, []byte("me:x:"+strconv.Itoa(os.Getuid())+":0::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "f")
	rep := moduletest.MustRun(t, declaration, run, map[string]any{"path": path, "content": "", "user": "me", "passwd_file": passwd})
	if rep.Result()["uid"] != os.Getuid() {
		t.Errorf("uid %v", rep.Result()["uid"])
	}
	_, err := moduletest.Run(t, declaration, run, map[string]any{"path": path, "content": "", "user": "nobody-here", "passwd_file": passwd})
	if err == nil || !strings.Contains(err.Error(), `user: "nobody-here" not found in `+passwd) {
		t.Errorf("err %v", err)
	}
}

func TestAFolderOrAHugeFileIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": dir, "content": "x"}); err == nil || !strings.HasSuffix(err.Error(), "is not a regular file") {
		t.Errorf("folder: %v", err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, kit.MaxRecorded+1), 0o644)
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"path": big, "content": "x"}); err == nil || !strings.Contains(err.Error(), "takes files up to") {
		t.Errorf("big: %v", err)
	}
}
