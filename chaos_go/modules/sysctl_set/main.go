// Command sysctl_set sets a kernel parameter at run time, as `sysctl -w` does.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"chaosrun/chaos_go/kit"
	"chaosrun/chaos_go/kit/sysctlconf"
)

//go:embed params.schema.json
var declaration []byte

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	key, value := p.String("key"), p.String("value")
	path, err := sysctlconf.KeyPath(p.String("proc_sys"), key)
	if err != nil {
		return err
	}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sysctl %s: no such key (%s does not exist)", key, path)
	case err != nil:
		return fmt.Errorf("sysctl %s: %w", key, err)
	case st.IsDir():
		return fmt.Errorf("sysctl %s: is a directory of keys, not a key", key)
	}
	r.Set("persist_file", "")
	var boot *kit.LineEdit
	if p.Bool("persist") {
		if boot, err = planBoot(p.String("persist_file"), key, value); err != nil {
			return err
		}
	}

	var before string
	raw, readErr := os.ReadFile(path)
	if readErr != nil {
		r.Warnf("sysctl %s: could not read the value before: %v", key, readErr)
	} else {
		before = sysctlconf.Normalize(string(raw))
	}
	if err := writeValue(path, value); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	var after string
	if raw, err := os.ReadFile(path); err == nil {
		after = sysctlconf.Normalize(string(raw))
	}
	if readErr == nil && after != sysctlconf.Normalize(value) {
		r.Warnf("sysctl %s: wrote %q, reads back %q", key, value, after)
	}
	r.Logf("sysctl %s: %q -> %q", key, before, after)
	r.Set("before", before)
	r.Set("after", after)
	r.Set("path", path)
	change := kit.Change{Action: "sysctl_set", Path: key, After: after, Detail: map[string]any{"file": path}}
	if readErr == nil {
		change.Before = before
		change.Detail["undo"] = [][]string{{"sysctl", "-w", key + "=" + before}}
	}
	r.Changed(change)
	if boot == nil {
		return nil
	}
	if err := boot.Apply(); err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	r.Changed(boot.Change())
	r.Set("persist_file", boot.Path)
	r.Logf("persist: %s: added %q at line %d", boot.Path, boot.Lines[0], boot.First)
	return nil
}

// planBoot plans the line "key = value" appended to file, after checking that it would
// be applied at boot: file is in a sysctl.d directory that outlives a reboot, something
// applies that directory at boot, and no file read after it sets the key too. The
// directories and appliers are looked for under the root that file's directory is in (/ on a
// target; a temp dir in tests).
func planBoot(file, key, value string) (*kit.LineEdit, error) {
	dir, name := filepath.Dir(file), filepath.Base(file)
	root, ok := "", false
	for _, d := range sysctlconf.Dirs {
		if r, found := strings.CutSuffix(dir, d); found && d != "/run/sysctl.d" {
			root, ok = r, true
			break
		}
	}
	if !ok {
		return nil, fmt.Errorf("persist: %s is not in a directory read at boot that survives a reboot (/etc/sysctl.d, /usr/local/lib/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d)", file)
	}
	applier := ""
	for _, a := range sysctlconf.Appliers {
		if st, err := os.Stat(root + a); err == nil && !st.IsDir() {
			applier = root + a
			break
		}
	}
	if applier == "" {
		return nil, fmt.Errorf("persist: nothing would apply %s at boot: none of %s exists; set persist: false",
			file, strings.Join(prefixed(root, sysctlconf.Appliers), ", "))
	}
	want, err := sysctlconf.KeyPath("", key)
	if err != nil {
		return nil, err
	}
	seen := map[string]string{} // name -> the file of that name that is read
	for _, d := range sysctlconf.Dirs {
		entries, _ := os.ReadDir(root + d)
		for _, e := range entries {
			if _, dup := seen[e.Name()]; !dup && strings.HasSuffix(e.Name(), ".conf") {
				seen[e.Name()] = filepath.Join(root+d, e.Name())
			}
		}
	}
	if other, ok := seen[name]; ok && other != file {
		return nil, fmt.Errorf("persist: %s would not be read at boot: %s has the same name and masks it", file, other)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		if n > name {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		other := seen[n]
		if line := sysctlconf.SetsKey(other, want); line != "" {
			return nil, fmt.Errorf("persist: %s sets %s too (%q) and is read after %s at boot, so its value would win; name persist_file to sort after it, or set persist: false",
				other, key, line, name)
		}
	}
	e, err := kit.PlanLines(file, -1, []string{key + " = " + value}, 0o644)
	if err != nil {
		return nil, fmt.Errorf("persist: %w", err)
	}
	return e, nil
}

func prefixed(root string, paths []string) []string {
	out := make([]string, len(paths))
	for i, p := range paths {
		out[i] = root + p
	}
	return out
}

// writeValue writes value to an existing sysctl file the way `sysctl -w` does
// (open for writing with truncation, one write), never creating a file.
func writeValue(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
