// Command fstab_entry breaks an /etc/fstab entry so its filesystem no longer mounts.
package main

import (
	"context"
	crand "crypto/rand"
	_ "embed"
	"fmt"
	"path/filepath"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/mounts"
	"chaosrun/chaos_go/kit/sysexec"
)

//go:embed params.schema.json
var declaration []byte

// entry is an fstab line's fields: source, mount point, type, options, dump, pass.
type entry []string

func (e entry) String() string { return strings.Join(e, " ") }

// parseEntry splits an fstab line into its fields, or returns nil for a comment or blank.
func parseEntry(line string) entry {
	fields := strings.Fields(line)
	if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
		return nil
	}
	for len(fields) < 6 {
		fields = append(fields, map[int]string{2: "auto", 3: "defaults", 4: "0", 5: "0"}[len(fields)])
	}
	return entry(fields)
}

// unknownUUID is a random version 4 UUID: no disk has it.
func unknownUUID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func addOption(options, option string) string {
	for _, o := range strings.Split(options, ",") {
		if o == option {
			return options
		}
	}
	return options + "," + option
}

// edit returns the fstab text with the fault applied, the entry before and after, and its
// line number (1-based).
func edit(text string, p kit.Params) (out, before, after string, line int, err error) {
	mountPoint, fault, value := filepath.Clean(p.String("mount_point")), p.String("fault"), p.String("value")
	lines := strings.Split(text, "\n")
	if strings.HasSuffix(text, "\n") {
		lines = lines[:len(lines)-1]
	}
	at := -1
	for i, l := range lines {
		if e := parseEntry(l); e != nil && filepath.Clean(e[1]) == mountPoint {
			at = i
			break
		}
	}
	var changed entry
	switch {
	case fault == "add":
		if at >= 0 {
			return "", "", "", 0, fmt.Errorf("%s already has an entry for %s (line %d); `add` is for a new one", p.String("fstab"), mountPoint, at+1)
		}
		if value == "" {
			value = "UUID=" + unknownUUID()
		}
		changed = entry{value, mountPoint, p.String("fstype"), p.String("options"), "0", "2"}
		lines = append(lines, "")
		at = len(lines) - 1
	case at < 0:
		return "", "", "", 0, fmt.Errorf("%s has no entry for %s", p.String("fstab"), mountPoint)
	default:
		old := parseEntry(lines[at])
		before = old.String()
		changed = append(entry(nil), old...)
		switch fault {
		case "remove":
			changed = nil
		case "bad_uuid":
			if value == "" {
				value = unknownUUID()
			}
			changed[0] = "UUID=" + strings.TrimPrefix(value, "UUID=")
		case "bad_option":
			if value == "" {
				value = "data=journaled"
			}
			changed[3] = addOption(changed[3], value)
		case "bad_type":
			if value == "" {
				value = map[bool]string{true: "ext4", false: "xfs"}[changed[2] == "xfs"]
			}
			changed[2] = value
		case "bad_mount_point":
			if value == "" {
				value = mountPoint + "0"
			}
			if !strings.HasPrefix(value, "/") {
				return "", "", "", 0, fmt.Errorf("value %q: a mount point is an absolute path", value)
			}
			changed[1] = value
		}
	}
	if changed != nil && p.Bool("nofail") {
		changed[3] = addOption(changed[3], "nofail")
	}
	if changed == nil {
		lines = append(lines[:at], lines[at+1:]...)
	} else {
		after = changed.String()
		lines[at] = after
	}
	return strings.Join(lines, "\n") + "\n", before, after, at + 1, nil
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	fstab := p.String("fstab")
	old, err := kit.ReadFileState(fstab)
	if err != nil {
		return err
	}
	if !old.Exists {
		return fmt.Errorf("%s does not exist", fstab)
	}
	text, before, after, line, err := edit(string(old.Content), p)
	if err != nil {
		return err
	}
	r.Set("before", before)
	r.Set("after", after)
	r.Set("line", line)
	// systemd makes mount units of the fstab; until it reloads, mount(8) warns that it
	// "still uses the old version" and the next boot is the first to read the new one.
	systemctl, lookErr := sysexec.LookTool("systemctl", p.String("systemctl_path"))
	if text != string(old.Content) {
		want := old
		want.Content = []byte(text)
		if err := kit.WriteRecorded(r, fstab, old, want, false, undoDetail(p, systemctl, lookErr == nil)); err != nil {
			return err
		}
	}
	r.Logf("%s line %d: %q -> %q", fstab, line, before, after)
	if lookErr != nil {
		r.Warnf("no daemon-reload: %v", lookErr)
		return nil
	}
	if _, stderr, err := sysexec.Run(ctx, []string{systemctl, "daemon-reload"}, ""); err != nil {
		r.Warnf("systemctl daemon-reload: %v: %s", err, sysexec.OneLine(stderr))
	}
	return nil
}

// undoDetail tells restore what to do once the entry is back: reload systemd's view of
// the fstab and, when the filesystem was mounted before the fault, mount it again (a
// reboot since the fault left it unmounted).
func undoDetail(p kit.Params, systemctl string, reload bool) map[string]any {
	d := map[string]any{}
	if reload {
		d["then"] = [][]string{{systemctl, "daemon-reload"}}
	}
	mountPoint := filepath.Clean(p.String("mount_point"))
	if ms, err := mounts.Read("/proc/self/mountinfo"); err == nil && p.String("fault") != "add" {
		if _, mounted := mounts.At(ms, mountPoint); mounted {
			d["mount"] = mountPoint
		}
	}
	return d
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
