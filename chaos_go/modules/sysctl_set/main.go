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
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// keyPath maps a sysctl key to its file under root with sysctl(8)'s rule:
// when the key's first separator is '.', dots separate names and a '/' stands
// for a dot inside a name; when it is '/', the key is already a path.
func keyPath(root, key string) (string, error) {
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

// normalize turns a sysctl value into one line with fields separated by single
// spaces, as sysctl(8) prints it (ip_local_port_range is tab-separated).
func normalize(s string) string { return strings.Join(strings.Fields(s), " ") }

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	key, value := p.String("key"), p.String("value")
	path, err := keyPath(p.String("proc_sys"), key)
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

	var before string
	raw, readErr := os.ReadFile(path)
	if readErr != nil {
		r.Warnf("sysctl %s: could not read the value before: %v", key, readErr)
	} else {
		before = normalize(string(raw))
	}
	if err := writeValue(path, value); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	var after string
	if raw, err := os.ReadFile(path); err == nil {
		after = normalize(string(raw))
	}
	if readErr == nil && after != normalize(value) {
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
	return nil
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
