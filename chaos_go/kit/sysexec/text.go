package sysexec

import "strings"

// FirstLine is the first non-blank line of a tool's output, trimmed: the answer of a tool
// that prints one word (systemctl is-active), or the gist of its message.
func FirstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(line)
}

// OneLine joins the non-blank lines of a tool's message, each trimmed, with "; ", so an
// error that quotes it stays one line.
func OneLine(s string) string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "; ")
}
