// Command resolv_conf points a resolv.conf at other name servers and/or search domains,
// replacing or going ahead of the current ones.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// resolver is what a resolv.conf says about name servers and search domains.
type resolver struct {
	nameservers []string
	search      []string
}

// parse reads nameserver, search and domain lines (the last search/domain line wins, as in glibc).
func parse(lines []string) resolver {
	res := resolver{nameservers: []string{}, search: []string{}}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) > 1 {
				res.nameservers = append(res.nameservers, f[1])
			}
		case "search", "domain":
			res.search = append([]string{}, f[1:]...)
		}
	}
	return res
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, mode := p.String("path"), p.String("mode")
	servers, search := p.Strings("nameservers"), p.Strings("search")
	if !p.Has("nameservers") && !p.Has("search") {
		return errors.New("give nameservers, search or both")
	}
	for _, s := range servers {
		if _, err := netip.ParseAddr(s); err != nil {
			return fmt.Errorf("nameservers: %w", err)
		}
	}
	content, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read %s: %w", path, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(content), "\n"), "\n")
	if len(content) == 0 {
		lines = nil
	}
	before := parse(lines)
	out := lines
	if p.Has("nameservers") {
		out = setNameservers(out, servers, mode)
	}
	if p.Has("search") {
		out = setSearch(out, search, before.search, mode)
	}
	after := parse(out)
	if err := kit.WriteFileAtomic(path, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	target, _ := filepath.EvalSymlinks(path)
	c := kit.Change{Action: "edit_file", Path: path, Before: string(content), Detail: map[string]any{"edit": "resolv_conf_" + mode, "target": target}}
	if content == nil {
		c.Action, c.Before = "create_file", nil
	}
	r.Changed(c)
	r.Set("nameservers_before", before.nameservers)
	r.Set("nameservers_after", after.nameservers)
	r.Set("search_before", before.search)
	r.Set("search_after", after.search)
	r.Logf("%s: nameservers %v -> %v, search %v -> %v", path, before.nameservers, after.nameservers, before.search, after.search)
	return nil
}

// setNameservers writes servers where the first nameserver line was (or at the end);
// replace drops the old ones, prepend keeps them after the new ones.
func setNameservers(lines, servers []string, mode string) []string {
	var newLines []string
	for _, s := range servers {
		newLines = append(newLines, "nameserver "+s)
	}
	out := []string{}
	inserted := false
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == "nameserver" {
			if !inserted {
				out = append(out, newLines...)
				inserted = true
			}
			if mode == "replace" {
				continue
			}
		}
		out = append(out, l)
	}
	if !inserted {
		out = append(out, newLines...)
	}
	return out
}

// setSearch replaces every search/domain line with one search line, where the first was.
func setSearch(lines, search, old []string, mode string) []string {
	domains := search
	if mode == "prepend" {
		domains = append(append([]string{}, search...), old...)
	}
	line := "search " + strings.Join(domains, " ")
	out := []string{}
	inserted := false
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 0 && (f[0] == "search" || f[0] == "domain") {
			if !inserted {
				out = append(out, line)
				inserted = true
			}
			continue
		}
		out = append(out, l)
	}
	if !inserted {
		out = append([]string{line}, out...)
	}
	return out
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
