// Command file_contains looks for lines of a file that match a pattern or contain a text.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"syscall"
	"unicode/utf8"

	"chaosrun/chaos_go/kit"
)

//go:embed params.schema.json
var declaration []byte

// Limits: the longest line read, and how much of the first match is reported.
const (
	maxLine      = 16 << 20
	maxFirstLine = 4096
)

// lineMatcher builds the per-line test from pattern or text.
func lineMatcher(pattern, text string, hasPattern, hasText, ignoreCase bool) (func([]byte) bool, error) {
	switch {
	case hasPattern == hasText:
		return nil, errors.New("give exactly one of pattern and text")
	case hasPattern:
		if ignoreCase {
			pattern = "(?i)" + pattern
		}
		re, err := regexp.Compile(pattern)
		if err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
		return re.Match, nil
	case ignoreCase:
		lower := []byte(strings.ToLower(text))
		return func(line []byte) bool { return bytes.Contains(bytes.ToLower(line), lower) }, nil
	default:
		b := []byte(text)
		return func(line []byte) bool { return bytes.Contains(line, b) }, nil
	}
}

func run(ctx context.Context, p kit.Params, r *kit.Report) error {
	path := p.String("path")
	match, err := lineMatcher(p.String("pattern"), p.String("text"), p.Has("pattern"), p.Has("text"), p.Bool("ignore_case"))
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		r.Set("exists", false)
		r.Set("matches", false)
		r.Set("count", 0)
		r.Set("first_line", "")
		r.Set("line_number", 0)
		return nil
	}
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()

	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	count, lineNo, firstNo, first := 0, 0, 0, ""
	for sc.Scan() {
		lineNo++
		if lineNo%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if !match(sc.Bytes()) {
			continue
		}
		count++
		if firstNo == 0 {
			firstNo, first = lineNo, clip(sc.Text(), maxFirstLine)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s after line %d: %w", path, lineNo, err)
	}
	r.Set("exists", true)
	r.Set("matches", count > 0)
	r.Set("count", count)
	r.Set("first_line", first)
	r.Set("line_number", firstNo)
	return nil
}

// clip cuts s to at most n bytes without splitting a UTF-8 sequence.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func main() { kit.Main(kit.Module{Declaration: declaration, Run: run}) }
