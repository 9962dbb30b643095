// Command hosts_entry adds a wrong address for a host name to a hosts file, ahead of any
// existing entry so it wins, or removes a name from it.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// entry is one hosts line split into address, names and comment.
type entry struct {
	addr    string
	names   []string
	comment string // including the '#', or ""
}

// parseLine returns the entry of a line, or ok=false for blank and comment-only lines.
func parseLine(line string) (entry, bool) {
	body, comment := line, ""
	if i := strings.IndexByte(line, '#'); i >= 0 {
		body, comment = line[:i], line[i:]
	}
	fields := strings.Fields(body)
	if len(fields) < 2 {
		return entry{}, false
	}
	return entry{addr: fields[0], names: fields[1:], comment: comment}, true
}

func (e entry) String() string {
	s := e.addr + "\t" + strings.Join(e.names, " ")
	if e.comment != "" {
		s += " " + e.comment
	}
	return s
}

func (e entry) has(name string) bool {
	for _, n := range e.names {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, host, action := p.String("hosts_file"), p.String("hostname"), p.String("action")
	var addr string
	if p.Has("address") {
		a, err := netip.ParseAddr(p.String("address"))
		if err != nil {
			return fmt.Errorf("address: %w", err)
		}
		addr = a.String()
	} else if action == "add" {
		return errors.New("add needs an address")
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(content), "\n"), "\n")
	if len(content) == 0 {
		lines = nil
	}
	before := naming(lines, host)
	var out []string
	var changed int
	if action == "add" {
		out, changed = add(lines, host, addr)
	} else {
		out, changed = remove(lines, host, addr)
	}
	if changed > 0 {
		newContent := strings.Join(out, "\n") + "\n"
		if err := kit.WriteFileAtomic(path, []byte(newContent), 0o644); err != nil {
			return err
		}
		r.Changed(kit.Change{Action: "edit_file", Path: path, Before: string(content),
			Detail: map[string]any{"edit": "hosts_" + action, "hostname": host, "address": addr}})
	}
	after := naming(out, host)
	r.Set("lines_changed", changed)
	r.Set("before", before)
	r.Set("after", after)
	r.Logf("%s %s in %s: %d lines changed", action, host, path, changed)
	return nil
}

// naming returns the lines that name host.
func naming(lines []string, host string) []string {
	out := []string{}
	for _, l := range lines {
		if e, ok := parseLine(l); ok && e.has(host) {
			out = append(out, l)
		}
	}
	return out
}

// add inserts "addr host" before the first line naming host (resolvers take the first
// match), or appends it; an identical first entry means nothing to do.
func add(lines []string, host, addr string) ([]string, int) {
	line := entry{addr: addr, names: []string{host}}.String()
	for i, l := range lines {
		e, ok := parseLine(l)
		if !ok || !e.has(host) {
			continue
		}
		if a, err := netip.ParseAddr(e.addr); err == nil && a.String() == addr {
			return lines, 0 // already resolves there
		}
		out := append(append(append([]string{}, lines[:i]...), line), lines[i:]...)
		return out, 1
	}
	return append(append([]string{}, lines...), line), 1
}

// remove drops host from every line (with addr, if given), and lines left without a name.
func remove(lines []string, host, addr string) ([]string, int) {
	out := make([]string, 0, len(lines))
	changed := 0
	for _, l := range lines {
		e, ok := parseLine(l)
		if !ok || !e.has(host) {
			out = append(out, l)
			continue
		}
		if addr != "" {
			if a, err := netip.ParseAddr(e.addr); err != nil || a.String() != addr {
				out = append(out, l)
				continue
			}
		}
		changed++
		var names []string
		for _, n := range e.names {
			if !strings.EqualFold(n, host) {
				names = append(names, n)
			}
		}
		if len(names) > 0 {
			e.names = names
			out = append(out, e.String())
		}
	}
	return out, changed
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
