package sysexec

import "testing"

func TestFirstLineIsTheFirstNonBlankLineTrimmed(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "",
		"active\n":                 "active",
		"\n  inactive \r\nfoo\n":   "inactive",
		"enabled\r\n":              "enabled",
		"  \n\t\n":                 "",
		"Failed to connect\nmore ": "Failed to connect",
	} {
		if got := FirstLine(in); got != want {
			t.Errorf("FirstLine(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestOneLineJoinsTheNonBlankLinesTrimmed(t *testing.T) {
	for in, want := range map[string]string{
		"":                            "",
		"one\n":                       "one",
		"  a \r\n\n   \n b\n":         "a; b",
		"Failed to stop x.\nSee log.": "Failed to stop x.; See log.",
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q; want %q", in, got, want)
		}
	}
}
