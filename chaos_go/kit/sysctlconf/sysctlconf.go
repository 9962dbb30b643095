// Package sysctlconf knows how sysctl keys map to /proc/sys files and how the sysctl.d
// files are read at boot (sysctl.d(5)): shared by sysctl_set, which writes them, and the
// sysctl probe, which reads the value they would set.
package sysctlconf

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// KeyPath maps a sysctl key to its file under root with sysctl(8)'s rule:
// when the key's first separator is '.', dots separate names and a '/' stands
// for a dot inside a name; when it is '/', the key is already a path.
func KeyPath(root, key string) (string, error) {
	rel := key
	if i := strings.IndexAny(key, "./"); i >= 0 && key[i] == '.' {
		rel = strings.Map(func(r rune) rune {
			switch r {
			case '.':
				return '/'
			case '/':
				return '.'
			}
			return r
		}, key)
	}
	for _, part := range strings.Split(rel, "/") {
		if part == "" || part == "." || part == ".." {
			return "", fmt.Errorf("sysctl key %q: bad name %q", key, part)
		}
	}
	return filepath.Join(root, rel), nil
}

// Normalize turns a sysctl value into one line with fields separated by single
// spaces, as sysctl(8) prints it (ip_local_port_range is tab-separated).
func Normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

// Dirs are the directories systemd-sysctl reads *.conf files from, highest precedence first: a
// file masks those of the same name further down, and all are applied in the order of
// their names, so that a later name wins for a key both set (sysctl.d(5)).
var Dirs = []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"}

// Appliers apply the sysctl.d files at boot: systemd-sysctl, or the init script of
// procps (sysvinit) or OpenRC.
var Appliers = []string{"/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl", "/etc/init.d/procps", "/etc/init.d/sysctl"}

// SetsKey returns the line of the sysctl.d file at path that sets the key whose path
// form (KeyPath with no root) is want, or "". A key in the file may be a glob.
func SetsKey(path, want string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' || t[0] == ';' {
			continue
		}
		k, _, found := strings.Cut(t, "=")
		if !found {
			continue
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "-")
		got, err := KeyPath("", k)
		if err != nil {
			continue
		}
		if ok, _ := filepath.Match(got, want); ok || got == want {
			return t
		}
	}
	return ""
}

// Files are the sysctl.d files read at boot under root, by name (a name in an earlier
// directory of Dirs masks the same name further down), and their names in the order they
// are applied: a later file wins for a key both set.
func Files(root string) (names []string, byName map[string]string) {
	byName = map[string]string{}
	for _, d := range Dirs {
		entries, _ := os.ReadDir(root + d)
		for _, e := range entries {
			if _, dup := byName[e.Name()]; !dup && strings.HasSuffix(e.Name(), ".conf") {
				byName[e.Name()] = filepath.Join(root+d, e.Name())
			}
		}
	}
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, byName
}

// BootValue is the value the sysctl.d files under root set for key at boot (the last
// file that sets it wins), with that file; "" and "" when none sets it.
func BootValue(root, key string) (value, file string, err error) {
	want, err := KeyPath("", key)
	if err != nil {
		return "", "", err
	}
	names, byName := Files(root)
	for _, n := range names {
		if line := SetsKey(byName[n], want); line != "" {
			_, v, _ := strings.Cut(line, "=")
			value, file = Normalize(v), byName[n]
		}
	}
	return value, file, nil
}
