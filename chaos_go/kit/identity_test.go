package kit

import (
	"context"
	"strings"
	"testing"
	"time"

	"chaosrun/chaos_go/kit/kittest"
)

func TestIdentityIsTheDeclarationsTitleAndKind(t *testing.T) {
	name, kind, err := Identity(testDeclaration)
	if err != nil || name != "t" || kind != Chaos {
		t.Errorf("Identity = %q, %q, %v; want \"t\", chaos, nil", name, kind, err)
	}
	probe := []byte(strings.Replace(string(testDeclaration), `"x-kind": "chaos"`, `"x-kind": "probe"`, 1))
	if _, kind, err := Identity(probe); err != nil || kind != Probe {
		t.Errorf("Identity of a probe = %q, %v; want probe, nil", kind, err)
	}
}

func TestIdentityRefusesADeclarationWithoutNameOrKind(t *testing.T) {
	cases := map[string]struct{ old, new, want string }{
		"no title":     {`"title": "t", `, "", "title: missing"},
		"empty title":  {`"title": "t"`, `"title": ""`, "title: missing"},
		"no x-kind":    {`"x-kind": "chaos", `, "", `x-kind: got ""`},
		"other x-kind": {`"x-kind": "chaos"`, `"x-kind": "stress"`, `x-kind: got "stress"`},
		"not JSON":     {`{`, ``, "declaration: "},
	}
	for name, c := range cases {
		decl := []byte(strings.Replace(string(testDeclaration), c.old, c.new, 1))
		if _, _, err := Identity(decl); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Identity = %v; want an error containing %q", name, err, c.want)
		}
		if err := CheckDeclaration(decl); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: CheckDeclaration = %v; want an error containing %q", name, err, c.want)
		}
	}
}

func TestCheckDeclarationReportsEveryConvention(t *testing.T) {
	if err := CheckDeclaration(testDeclaration); err != nil {
		t.Errorf("CheckDeclaration(testDeclaration) = %v; want nil", err)
	}
	bad := strings.NewReplacer(`"x-rank": 1`, `"x-rank": 0`, `"description": "A test module."`, `"description": ""`,
		`"description": "Size."`, `"description": "two\nlines"`, `"additionalProperties": false`, `"additionalProperties": true`)
	err := CheckDeclaration([]byte(bad.Replace(string(testDeclaration))))
	for _, want := range []string{"x-rank: got 0", `description: got ""`, `size_mb: description: got "two\nlines"`, "additionalProperties: want false"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckDeclaration = %v; want it to contain %q", err, want)
		}
	}
}

func TestRunNamesItselfByTheDeclarationsTitle(t *testing.T) {
	mon := kittest.NewMonitor(t)
	m := testModule(func(ctx context.Context, p Params, r *Report) error { return nil })
	code, stderr, out := runAgainst(t, mon, m, mon.Config("fill_disk", okParams, 5*time.Second))
	errMsg, _ := out.Result["error"].(string)
	if code != ExitBadConfig || errMsg != `config is for module "fill_disk", this is "t"` {
		t.Errorf("got exit %d error %q; want %d and the two names", code, errMsg, ExitBadConfig)
	}
	if !strings.HasPrefix(stderr, "t: ") {
		t.Errorf("stderr: got %q; want it prefixed with the declaration's title", stderr)
	}
}

func TestRunWithoutAUsableDeclarationIsBadConfigAndDoesNotRun(t *testing.T) {
	mon := kittest.NewMonitor(t)
	ran := false
	m := Module{
		Declaration: []byte(strings.Replace(string(testDeclaration), `"title": "t", `, "", 1)),
		Run:         func(ctx context.Context, p Params, r *Report) error { ran = true; return nil },
	}
	code, stderr, out := runAgainst(t, mon, m, mon.Config("t", okParams, 5*time.Second))
	errMsg, _ := out.Result["error"].(string)
	if code != ExitBadConfig || ran || !strings.Contains(errMsg, "title: missing") {
		t.Errorf("got exit %d ran=%v error %q; want %d, not run, title missing", code, ran, errMsg, ExitBadConfig)
	}
	if !strings.HasPrefix(stderr, "module: ") {
		t.Errorf("stderr: got %q; want it prefixed \"module: \"", stderr)
	}
}

func TestRunWithABadKindNamesItselfAndDoesNotRun(t *testing.T) {
	mon := kittest.NewMonitor(t)
	ran := false
	m := Module{
		Declaration: []byte(strings.Replace(string(testDeclaration), `"x-kind": "chaos"`, `"x-kind": "stress"`, 1)),
		Run:         func(ctx context.Context, p Params, r *Report) error { ran = true; return nil },
	}
	code, stderr, out := runAgainst(t, mon, m, mon.Config("t", okParams, 5*time.Second))
	errMsg, _ := out.Result["error"].(string)
	if code != ExitBadConfig || ran || !strings.Contains(errMsg, `x-kind: got "stress"`) {
		t.Errorf("got exit %d ran=%v error %q; want %d, not run, the bad kind", code, ran, errMsg, ExitBadConfig)
	}
	if !strings.HasPrefix(stderr, "t: ") {
		t.Errorf("stderr: got %q; want it prefixed with the title", stderr)
	}
}
