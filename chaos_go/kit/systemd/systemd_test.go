package systemd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeSystemctl writes a systemctl running script with "$1" the verb and "$2" the unit.
func fakeSystemctl(t *testing.T, script string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "systemctl")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestIsUnitNameRefusesWhatCouldPassForAnOption(t *testing.T) {
	for _, good := range []string{"nginx", "nginx.service", "getty@tty1.service", "systemd-journald.service", "dev-sda1.mount", "a:b", "_x"} {
		if !IsUnitName(good) {
			t.Errorf("IsUnitName(%q) = false; want true", good)
		}
	}
	for _, bad := range []string{"", "-H", "--now", "a b", "a\nb", ".service", "x/y"} {
		if IsUnitName(bad) {
			t.Errorf("IsUnitName(%q) = true; want false", bad)
		}
	}
}

func TestStateIsTheFirstLinePrintedWhateverTheExitStatus(t *testing.T) {
	systemctl := fakeSystemctl(t, `case "$1" in
is-active) printf '  inactive \n'; exit 3 ;;
is-enabled) echo enabled ;;
esac
`)
	if state, reason := State(context.Background(), systemctl, "is-active", "nginx"); state != "inactive" || reason != "" {
		t.Errorf("is-active = %q, %q; want inactive, no reason", state, reason)
	}
	if state, reason := State(context.Background(), systemctl, "is-enabled", "nginx"); state != "enabled" || reason != "" {
		t.Errorf("is-enabled = %q, %q; want enabled, no reason", state, reason)
	}
}

func TestStateIsUnknownWithSystemctlsMessageOrTheError(t *testing.T) {
	talks := fakeSystemctl(t, `echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
echo "Failed to connect to bus: Host is down" >&2
exit 1
`)
	state, reason := State(context.Background(), talks, "is-active", "nginx")
	if want := "System has not been booted with systemd as init system (PID 1). Can't operate.; Failed to connect to bus: Host is down"; state != "unknown" || reason != want {
		t.Errorf("State = %q, %q; want unknown, %q", state, reason, want)
	}
	silent := fakeSystemctl(t, "exit 4\n")
	state, reason = State(context.Background(), silent, "is-enabled", "nginx")
	if state != "unknown" || reason != "systemctl is-enabled nginx: exit status 4" {
		t.Errorf("State = %q, %q; want unknown with the exit status", state, reason)
	}
	state, reason = State(context.Background(), filepath.Join(t.TempDir(), "systemctl"), "is-active", "nginx")
	if state != "unknown" || !strings.HasPrefix(reason, "systemctl is-active nginx: ") {
		t.Errorf("State of a missing systemctl = %q, %q; want unknown with the error", state, reason)
	}
}

func TestStatePassesTheUnitAsOneArgument(t *testing.T) {
	systemctl := fakeSystemctl(t, `echo "$#:$2"`)
	if state, _ := State(context.Background(), systemctl, "is-active", "getty@tty1.service"); state != "2:getty@tty1.service" {
		t.Errorf("State = %q; want systemctl called with the verb and the unit only", state)
	}
}
