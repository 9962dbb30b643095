package sysexec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTool(t *testing.T, dir, name, script string, mode os.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLookToolTakesPathsAsGivenAndSearchesPATHThenTheSbinDirs(t *testing.T) {
	dir := t.TempDir()
	tool := writeTool(t, dir, "mytool", "exit 0\n", 0o755)
	writeTool(t, dir, "notexec", "exit 0\n", 0o644)

	if got, err := LookTool("mytool", tool); err != nil || got != tool {
		t.Errorf("LookTool(path) = %q, %v; want %q", got, err, tool)
	}
	t.Setenv("PATH", "relative/dir:"+dir)
	if got, err := LookTool("mytool", "mytool"); err != nil || got != tool {
		t.Errorf("LookTool(name) = %q, %v; want %q", got, err, tool)
	}
	t.Setenv("PATH", "")
	if got, err := LookTool("sh", "sh"); err != nil || !filepath.IsAbs(got) {
		t.Errorf("LookTool(sh) with an empty PATH = %q, %v; want it from the bin directories", got, err)
	}
	for _, c := range []struct{ name, want string }{
		{filepath.Join(dir, "notexec"), "mytool not found: " + filepath.Join(dir, "notexec") + " is not an executable file"},
		{filepath.Join(dir, "missing"), "mytool not found: " + filepath.Join(dir, "missing") + " is not an executable file"},
		{"no-such-tool-here", `mytool not found: no executable "no-such-tool-here" in PATH or the sbin and bin directories`},
	} {
		if _, err := LookTool("mytool", c.name); err == nil || err.Error() != c.want {
			t.Errorf("LookTool(%q) = %v; want %q", c.name, err, c.want)
		}
	}
}

func TestRunFeedsStdinAndReturnsBothStreamsAndTheExitStatus(t *testing.T) {
	sh, err := LookTool("sh", "sh")
	if err != nil {
		t.Skip(err)
	}
	stdout, stderr, err := Run(context.Background(), []string{sh, "-c", `cat; echo "$LC_ALL" >&2; exit 3`}, "hello\n")
	if stdout != "hello\n" || stderr != "C\n" || err == nil || err.Error() != "exit status 3" {
		t.Errorf("Run = %q, %q, %v; want hello, C (the C locale), exit status 3", stdout, stderr, err)
	}
	if _, _, err := Run(context.Background(), []string{sh, "-c", "true"}, ""); err != nil {
		t.Errorf("Run(true) = %v; want nil", err)
	}
	if _, _, err := Run(context.Background(), []string{filepath.Join(t.TempDir(), "missing")}, ""); err == nil {
		t.Error("Run of a missing file succeeded; want an error")
	}
}

func TestRunKillsTheToolWhenTheContextEnds(t *testing.T) {
	sh, err := LookTool("sh", "sh")
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err = Run(ctx, []string{sh, "-c", "exec sleep 30"}, "")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Run = %v; want context deadline exceeded (signal: killed)", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("Run took %v; want about 200 ms", took)
	}
}

func TestLookToolRemembersWhatItFoundForTheSensors(t *testing.T) {
	dir := t.TempDir()
	tool := writeTool(t, dir, "fakectl", "exit 0\n", 0o755)
	t.Setenv("PATH", dir)
	if _, err := LookTool("fakectl", "fakectl"); err != nil {
		t.Fatal(err)
	}
	LookTool("fakectl", "fakectl") // found twice, remembered once
	LookTool("missing", "no-such-tool-here")
	var found []Tool
	for _, r := range Resolved() {
		if r.Label == "fakectl" || r.Label == "missing" {
			found = append(found, r)
		}
	}
	if len(found) != 1 || found[0].Path != tool {
		t.Errorf("Resolved() = %v; want one fakectl at %q", found, tool)
	}
}
