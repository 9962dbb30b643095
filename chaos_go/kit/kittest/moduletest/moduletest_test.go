package moduletest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"chaosrun/chaos_go/kit"
)

var declaration = []byte(`{
  "title": "echo", "description": "Echo a word.", "x-kind": "probe", "x-rank": 99,
  "type": "object",
  "properties": {
    "word": {"type": "string", "description": "What to echo."},
    "times": {"type": "integer", "minimum": 1, "default": 1, "description": "How often."}
  },
  "required": ["word"],
  "additionalProperties": false
}`)

func echo(ctx context.Context, p kit.Params, r *kit.Report) error {
	if p.String("word") == "fail" {
		return errors.New("asked to fail")
	}
	r.Set("echo", strings.Repeat(p.String("word"), int(p.Int("times"))))
	return nil
}

func TestParamsAndProbeRunTheModuleWithValidatedParams(t *testing.T) {
	if got := Params(t, declaration, `{"word": "a", "times": 3}`).Int("times"); got != 3 {
		t.Errorf("times = %d; want 3", got)
	}
	if _, err := ParseParams(declaration, `{"times": 0}`); err == nil || !strings.Contains(err.Error(), "word") || !strings.Contains(err.Error(), "times") {
		t.Errorf("ParseParams = %v; want both problems", err)
	}
	if _, err := ParseParams(declaration, `{"word": `); err == nil || !strings.HasPrefix(err.Error(), "bad test params") {
		t.Errorf("ParseParams of bad JSON = %v; want 'bad test params ...'", err)
	}
	if res := Probe(t, declaration, echo, map[string]any{"word": "ab", "times": 2}); res["echo"] != "abab" {
		t.Errorf("result = %v; want echo abab", res)
	}
	if _, err := Run(t, declaration, echo, map[string]any{"word": "fail"}); err == nil {
		t.Error("Run = nil; want run's error")
	}
}
