// Package mounts reads the kernel's table of mounts (proc(5), /proc/PID/mountinfo) and
// fstab files (fstab(5)), for the modules that break or check mounts.
package mounts

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Mount is one line of mountinfo, its escapes (\040 for a space) undone.
type Mount struct {
	MountPoint   string
	Source       string
	FSType       string
	MountOptions []string // per mount: rw or ro, nosuid, relatime...
	SuperOptions []string // of the filesystem: errors=remount-ro...
}

// ReadOnly says whether the mount is read-only (its per-mount "ro").
func (m Mount) ReadOnly() bool {
	for _, o := range m.MountOptions {
		if o == "ro" {
			return true
		}
	}
	return false
}

// Options are the mount's options and then its filesystem's, each once.
func (m Mount) Options() []string {
	seen := map[string]bool{}
	var out []string
	for _, o := range append(append([]string{}, m.MountOptions...), m.SuperOptions...) {
		if !seen[o] {
			seen[o] = true
			out = append(out, o)
		}
	}
	return out
}

// Unescape undoes the octal escapes mountinfo and fstab use for blanks and backslashes.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Escape writes blanks and backslashes as mountinfo does (\040 for a space), so that a
// path stays one space-separated field.
func Escape(s string) string {
	if !strings.ContainsAny(s, " \t\n\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\\':
			fmt.Fprintf(&b, "\\%03o", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Parse reads mountinfo text; malformed lines are skipped.
func Parse(text string) []Mount {
	var out []Mount
	for _, line := range strings.Split(text, "\n") {
		f := strings.Split(line, " ")
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+3 >= len(f) {
			continue
		}
		out = append(out, Mount{
			MountPoint:   Unescape(f[4]),
			Source:       Unescape(f[sep+2]),
			FSType:       f[sep+1],
			MountOptions: strings.Split(f[5], ","),
			SuperOptions: strings.Split(f[sep+3], ","),
		})
	}
	return out
}

// At returns the mount at exactly mountPoint that is seen there: the last one mounted,
// when several are stacked.
func At(ms []Mount, mountPoint string) (Mount, bool) {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].MountPoint == mountPoint {
			return ms[i], true
		}
	}
	return Mount{}, false
}

// Read parses the mountinfo file at path (e.g. /proc/self/mountinfo).
func Read(path string) ([]Mount, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(string(data)), nil
}

// Entry is an fstab line: source, mount point, type, options, and its 1-based line number.
type Entry struct {
	Source, MountPoint, FSType, Options string
	Line                                int
}

// ReadFstab reads the entries of an fstab file (comments and blank lines skipped; missing
// trailing fields take fstab(5)'s defaults).
func ReadFstab(path string) ([]Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		e := Entry{Source: Unescape(fields[0]), MountPoint: Unescape(fields[1]), FSType: "auto", Options: "defaults", Line: n}
		if len(fields) > 2 {
			e.FSType = fields[2]
		}
		if len(fields) > 3 {
			e.Options = fields[3]
		}
		out = append(out, e)
	}
	return out, sc.Err()
}
