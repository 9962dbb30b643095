// Command corrupt_config replaces, deletes or inserts a line of a configuration file,
// keeping its mode and owner (sshd_config, fstab, sudoers, nginx.conf...).
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// maxBeforeContent is the largest original content kept in the change record for rollback.
const maxBeforeContent = 64 << 10

// edit is one line acted on.
type edit struct {
	Line   int    `json:"line"` // 1-based, in the original file
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// selector picks lines: by regular expression, or by number.
type selector struct {
	re   *regexp.Regexp
	line int // 1-based, 0 = unset
	all  bool
}

func (s selector) matches(i int, line string) bool {
	if s.re != nil {
		return s.re.MatchString(strings.TrimSuffix(line, "\r"))
	}
	return i+1 == s.line
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path, action := p.String("path"), p.String("action")
	sel, err := newSelector(p)
	if err != nil {
		return err
	}
	if (action == "replace" || action == "insert") && !p.Has("text") {
		return fmt.Errorf("%s needs text", action)
	}
	if action != "insert" && sel.re == nil && sel.line == 0 {
		return fmt.Errorf("%s needs match or line", action)
	}
	if strings.ContainsAny(p.String("text"), "\n\r") {
		return errors.New("text must be a single line")
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	lines, trailingNewline := splitLines(string(content))
	out, edits := apply(lines, action, sel, p.String("text"), p.String("position"))
	if len(edits) == 0 {
		if sel.re != nil {
			return fmt.Errorf("no line of %s matches %q", path, sel.re.String())
		}
		return fmt.Errorf("%s has %d lines; line %d does not exist", path, len(lines), sel.line)
	}
	newContent := joinLines(out, trailingNewline || len(lines) == 0)
	if err := kit.WriteFileAtomic(path, []byte(newContent), 0o644); err != nil {
		return err
	}
	report(r, path, action, string(content), edits)
	return nil
}

func newSelector(p kit.Params) (selector, error) {
	s := selector{line: int(p.Int("line")), all: p.Bool("all")}
	if p.Has("match") && p.Has("line") {
		return s, errors.New("give match or line, not both")
	}
	if p.Has("match") {
		re, err := regexp.Compile(p.String("match"))
		if err != nil {
			return s, fmt.Errorf("match: %w", err)
		}
		s.re = re
	}
	return s, nil
}

// splitLines splits on "\n", reporting whether the content ended with one.
func splitLines(content string) ([]string, bool) {
	if content == "" {
		return nil, false
	}
	trailing := strings.HasSuffix(content, "\n")
	return strings.Split(strings.TrimSuffix(content, "\n"), "\n"), trailing
}

func joinLines(lines []string, trailingNewline bool) string {
	s := strings.Join(lines, "\n")
	if trailingNewline && len(lines) > 0 {
		s += "\n"
	}
	return s
}

// apply returns the edited lines and what changed. Insert with no selector appends.
func apply(lines []string, action string, sel selector, text, position string) ([]string, []edit) {
	var out []string
	var edits []edit
	if action == "insert" && sel.re == nil && sel.line == 0 {
		return append(append(out, lines...), text), []edit{{Line: len(lines) + 1, After: text}}
	}
	done := false
	for i, line := range lines {
		if done || !sel.matches(i, line) {
			out = append(out, line)
			continue
		}
		switch action {
		case "replace":
			out = append(out, text)
			edits = append(edits, edit{Line: i + 1, Before: line, After: text})
		case "delete":
			edits = append(edits, edit{Line: i + 1, Before: line})
		case "insert":
			if position == "before" {
				out = append(out, text, line)
			} else {
				out = append(out, line, text)
			}
			edits = append(edits, edit{Line: i + 1, After: text})
		}
		done = sel.re == nil || !sel.all
	}
	return out, edits
}

func report(r *kit.Report, path, action, original string, edits []edit) {
	numbers := make([]int, len(edits))
	var before, after []string
	for i, e := range edits {
		numbers[i] = e.Line
		if action != "insert" {
			before = append(before, e.Before)
		}
		if action != "delete" {
			after = append(after, e.After)
		}
		r.Logf("%s line %d of %s", action, e.Line, path)
	}
	r.Set("changed_lines", len(edits))
	r.Set("line_numbers", numbers)
	r.Set("before", nonNil(before))
	r.Set("after", nonNil(after))
	c := kit.Change{Action: "edit_file", Path: path, Detail: map[string]any{"edit": action, "edits": edits}}
	if len(original) <= maxBeforeContent {
		c.Before = original
	} else {
		c.Detail["before_omitted"] = "larger than 64 KiB"
	}
	r.Changed(c)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
