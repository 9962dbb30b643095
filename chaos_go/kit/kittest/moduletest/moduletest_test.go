package moduletest

import (
	"context"
	"errors"
	"fmt"
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

func TestCheckDeclarationWantsTheFolderName(t *testing.T) {
	if err := checkName(declaration, "echo"); err != nil {
		t.Errorf("checkName(echo) = %v; want nil", err)
	}
	if err := checkName(declaration, "moduletest"); err == nil || !strings.Contains(err.Error(), `title "echo" differs from the module's folder name "moduletest"`) {
		t.Errorf("checkName(moduletest) = %v; want the two names", err)
	}
	bad := []byte(strings.Replace(string(declaration), `"x-kind": "probe"`, `"x-kind": "test"`, 1))
	if err := checkName(bad, "echo"); err == nil || !strings.Contains(err.Error(), "x-kind") {
		t.Errorf("checkName of a bad kind = %v; want an x-kind error", err)
	}
	rec := &recorder{TB: t}
	CheckDeclaration(rec, declaration) // this package's folder is moduletest, not echo
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], `folder name "moduletest"`) {
		t.Errorf("CheckDeclaration reported %q; want only the folder mismatch", rec.errors)
	}
}

// recorder is a testing.TB that keeps the errors reported to it instead of failing.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) { r.errors = append(r.errors, fmt.Sprint(args...)) }
