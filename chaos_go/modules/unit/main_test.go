package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

// fakeSystemctl answers `show` with a fixed set of properties, only those asked for with
// --property= as systemctl does, and logs its arguments.
func fakeSystemctl(t *testing.T) (path, log string) {
	t.Helper()
	dir := t.TempDir()
	log = filepath.Join(dir, "args")
	script := `#!/bin/sh
echo "$@" > ` + log + `
[ "$1" = show ] || exit 1
props=$(printf '%s\n' "$@" | sed -n 's/^--property=//p' | tr , '\n')
all='ActiveState=active
SubState=running
LoadState=loaded
UnitFileState=enabled
LimitNOFILE=1024
ExecStart={ path=/usr/sbin/nginx ; argv[]=/usr/sbin/nginx -g daemon on; ; }
DropInPaths=/etc/systemd/system/nginx.service.d/limits.conf'
if [ -z "$props" ]; then echo "$all"; exit 0; fi
for p in $props; do echo "$all" | grep "^$p=" || true; done
`
	path = filepath.Join(dir, "systemctl")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, log
}

func TestUnitReadsTheAskedPropertiesAndTheConvenienceFields(t *testing.T) {
	systemctl, log := fakeSystemctl(t)
	res := moduletest.Probe(t, declaration, run, map[string]any{"unit": "nginx.service", "systemctl_path": systemctl, "properties": []any{"LimitNOFILE", "ActiveState", "UnitFileState", "LoadState", "ExecStart", "Nope"}})
	props := res["properties"].(map[string]any)
	if props["LimitNOFILE"] != "1024" || !strings.HasPrefix(props["ExecStart"].(string), "{ path=/usr/sbin/nginx") || len(props) != 5 {
		t.Errorf("properties %v", props)
	}
	if res["active"] != true || res["enabled"] != "enabled" || res["loaded"] != true || res["reason"] != "" {
		t.Errorf("result %v", res)
	}
	args, _ := os.ReadFile(log)
	if got := strings.TrimSpace(string(args)); got != "show --no-pager --property=LimitNOFILE,ActiveState,UnitFileState,LoadState,ExecStart,Nope -- nginx.service" {
		t.Errorf("systemctl ran with %q", got)
	}
}

func TestTheDefaultPropertiesAreAskedForByName(t *testing.T) {
	systemctl, _ := fakeSystemctl(t)
	res := moduletest.Probe(t, declaration, run, map[string]any{"unit": "nginx", "systemctl_path": systemctl})
	props := res["properties"].(map[string]any)
	if props["DropInPaths"] != "/etc/systemd/system/nginx.service.d/limits.conf" || props["SubState"] != "running" {
		t.Errorf("properties %v", props)
	}
}

func TestWithoutSystemctlTheReasonSaysSo(t *testing.T) {
	res := moduletest.Probe(t, declaration, run, map[string]any{"unit": "nginx", "systemctl_path": filepath.Join(t.TempDir(), "systemctl")})
	if res["active"] != false || !strings.HasPrefix(res["reason"].(string), "systemctl not found: ") {
		t.Errorf("result %v", res)
	}
}

func TestABadUnitNameIsRefused(t *testing.T) {
	if _, err := moduletest.Run(t, declaration, run, map[string]any{"unit": "../etc/passwd"}); err == nil {
		t.Error("a path is not a unit name")
	}
}
