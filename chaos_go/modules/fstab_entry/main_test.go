package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/kittest/moduletest"
)

func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }

const fstab = `# /etc/fstab: static file system information.
UUID=0b6f2c1e-6c7a-4d55-9f5e-2a1f0e1d9c11 /               ext4    errors=remount-ro 0       1
/var/lib/exam-data.img /srv/data ext4 loop 0 0
/dev/sr0        /media/cdrom0   udf,iso9660 user,noauto     0       0
`

func apply(t *testing.T, raw string) (string, *kit.Report, error) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "fstab")
	os.WriteFile(path, []byte(fstab), 0o644)
	systemctl := filepath.Join(dir, "systemctl")
	os.WriteFile(systemctl, []byte("#!/bin/sh\necho \"$*\" >> "+dir+"/calls\n"), 0o755)
	r := kit.NewTestReport()
	err := run(context.Background(), moduletest.Params(t, declaration, `{`+raw+`, "fstab": "`+path+`", "systemctl_path": "`+systemctl+`"}`), r)
	got, _ := os.ReadFile(path)
	if calls, _ := os.ReadFile(filepath.Join(dir, "calls")); err == nil && string(calls) != "daemon-reload\n" {
		t.Errorf("%s: systemctl calls %q; want a daemon-reload", raw, calls)
	}
	return string(got), r, err
}

// dataLine is the last entry under /srv/data... in an fstab text, or "".
func dataLine(text string) string {
	found := ""
	for _, l := range strings.Split(text, "\n") {
		if e := parseEntry(l); e != nil && strings.HasPrefix(e[1], "/srv/data") {
			found = e.String()
		}
	}
	return found
}

func TestEachFaultEditsOnlyItsEntry(t *testing.T) {
	uuid := regexp.MustCompile(`^UUID=[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12} /srv/data ext4 loop 0 0$`)
	for raw, want := range map[string]string{
		`"mount_point": "/srv/data", "fault": "remove"`:                         "",
		`"mount_point": "/srv/data/", "fault": "bad_option"`:                    "/var/lib/exam-data.img /srv/data ext4 loop,data=journaled 0 0",
		`"mount_point": "/srv/data", "fault": "bad_option", "nofail": true`:     "/var/lib/exam-data.img /srv/data ext4 loop,data=journaled,nofail 0 0",
		`"mount_point": "/srv/data", "fault": "bad_type"`:                       "/var/lib/exam-data.img /srv/data xfs loop 0 0",
		`"mount_point": "/srv/data", "fault": "bad_mount_point"`:                "/var/lib/exam-data.img /srv/data0 ext4 loop 0 0",
		`"mount_point": "/srv/data", "fault": "bad_uuid", "value": "1234-ABCD"`: "UUID=1234-ABCD /srv/data ext4 loop 0 0",
		`"mount_point": "/srv/database", "fault": "add", "value": "LABEL=db"`:   "LABEL=db /srv/database ext4 defaults 0 2",
	} {
		got, r, err := apply(t, raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if line := dataLine(got); line != want {
			t.Errorf("%s: entry %q; want %q", raw, line, want)
		}
		others := strings.Count(got, "\n")
		if wantLines := strings.Count(fstab, "\n") + map[bool]int{true: 1}[strings.Contains(raw, "add")] - map[bool]int{true: 1}[strings.Contains(raw, "remove")]; others != wantLines {
			t.Errorf("%s: %d lines; want %d", raw, others, wantLines)
		}
		if !strings.HasPrefix(got, "# /etc/fstab: static") || !strings.Contains(got, "/dev/sr0        /media/cdrom0") {
			t.Errorf("%s: the other lines changed:\n%s", raw, got)
		}
		if c := r.Changes(); len(c) != 1 || c[0].Before.(map[string]any)["content_base64"] == nil {
			t.Errorf("%s: changes %+v; want the old fstab kept", raw, c)
		}
	}
	got, _, _ := apply(t, `"mount_point": "/srv/data", "fault": "bad_uuid"`)
	if line := dataLine(got); !uuid.MatchString(line) {
		t.Errorf("bad_uuid: %q; want a random v4 UUID", line)
	}
}

func TestMissingEntriesAndDuplicatesAreClearErrors(t *testing.T) {
	for raw, want := range map[string]string{
		`"mount_point": "/srv/nothing", "fault": "bad_option"`:                     "has no entry for /srv/nothing",
		`"mount_point": "/srv/data", "fault": "add"`:                               "already has an entry for /srv/data (line 3)",
		`"mount_point": "/srv/data", "fault": "bad_mount_point", "value": "data2"`: "absolute path",
	} {
		got, r, err := apply(t, raw)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v; want %q", raw, err, want)
		}
		if got != fstab || len(r.Changes()) != 0 {
			t.Errorf("%s: the fstab changed", raw)
		}
	}
}

// The record tells restore to reload systemd and, for a filesystem that is mounted (here
// /, which always is), to mount it again should a reboot have left it unmounted.
func TestTheRecordSaysHowRestoreBringsTheMountBack(t *testing.T) {
	for raw, wantMount := range map[string]any{
		`"mount_point": "/", "fault": "bad_option"`:             "/",
		`"mount_point": "/srv/nothing-here", "fault": "remove"`: nil,
		`"mount_point": "/", "fault": "add"`:                    nil,
	} {
		d := undoDetail(moduletest.Params(t, declaration, `{`+raw+`}`), "/usr/bin/systemctl", true)
		if d["mount"] != wantMount {
			t.Errorf("%s: mount %v, want %v", raw, d["mount"], wantMount)
		}
		if then, _ := d["then"].([][]string); len(then) != 1 || strings.Join(then[0], " ") != "/usr/bin/systemctl daemon-reload" {
			t.Errorf("%s: then %v", raw, d["then"])
		}
	}
}
