package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fakeSystemctl writes a systemctl that answers is-active with active and
// is-enabled with enabled, exiting the way systemctl does.
func fakeSystemctl(t *testing.T, active, enabled string) string {
	t.Helper()
	script := `#!/bin/sh
case "$1" in
is-active) echo ` + active + `; [ ` + active + ` = active ] ;;
is-enabled) echo ` + enabled + `; [ ` + enabled + ` = enabled ] ;;
*) exit 1 ;;
esac
`
	path := filepath.Join(t.TempDir(), "systemctl")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServiceActiveReportsSystemctlsAnswers(t *testing.T) {
	for _, c := range []struct {
		state, enabled string
		active         bool
	}{
		{"active", "enabled", true},
		{"inactive", "disabled", false},
		{"failed", "masked", false},
	} {
		res := moduletest.Probe(t, declaration, run, map[string]any{"service": "nginx", "systemctl_path": fakeSystemctl(t, c.state, c.enabled)})
		if res["active"] != c.active || res["state"] != c.state || res["enabled"] != c.enabled || res["reason"] != "" {
			t.Errorf("%s/%s: result %v", c.state, c.enabled, res)
		}
	}
}

func TestServiceActiveWithoutSystemctlIsUnknownWithAReason(t *testing.T) {
	res := moduletest.Probe(t, declaration, run, map[string]any{"service": "nginx", "systemctl_path": filepath.Join(t.TempDir(), "systemctl")})
	if res["active"] != false || res["state"] != "unknown" || !strings.HasPrefix(res["reason"].(string), "systemctl not found: ") {
		t.Errorf("result %v; want state unknown, reason 'systemctl not found: ...'", res)
	}
}

func TestServiceActiveWithoutSystemdIsUnknownWithSystemctlsMessage(t *testing.T) {
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		t.Skip("systemd is running here")
	}
	if _, err := exec.LookPath("systemctl"); err != nil {
		t.Skip("systemctl is not installed")
	}
	res := moduletest.Probe(t, declaration, run, map[string]any{"service": "chaosrun-test-no-such-unit"})
	if res["active"] != false || res["state"] != "unknown" || !strings.Contains(res["reason"].(string), "booted with systemd") {
		t.Errorf("result %v; want state unknown with systemctl's 'not booted with systemd' message", res)
	}
}
