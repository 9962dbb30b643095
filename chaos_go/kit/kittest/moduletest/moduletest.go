// Package moduletest runs a module's run function inside its main_test.go: params are
// checked against the module's declaration the way the binary checks a step's `with:`,
// and the report is a kit.NewTestReport. (It is apart from kittest, which package kit's
// own tests use and which therefore cannot import kit.)
package moduletest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"chaosrun/chaos_go/kit"
)

// Params decodes raw, the text of a JSON object such as `{"port": 80}`, and validates it
// against declaration; a problem fails the test.
func Params(t testing.TB, declaration []byte, raw string) kit.Params {
	t.Helper()
	p, err := ParseParams(declaration, raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// ParseParams is Params for a goroutine other than the test's, which must not call
// t.Fatal (such as a netnstest.Run function).
func ParseParams(declaration []byte, raw string) (kit.Params, error) {
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return kit.Params{}, fmt.Errorf("bad test params %s: %w", raw, err)
	}
	p, err := kit.NewParams(declaration, m)
	if err != nil {
		return kit.Params{}, fmt.Errorf("NewParams(%s): %w", raw, err)
	}
	return p, nil
}

// Run validates with against declaration (failing the test when it does not pass) and
// runs run with a test report, returning the report and run's error.
func Run(t testing.TB, declaration []byte, run kit.RunFunc, with map[string]any) (*kit.Report, error) {
	t.Helper()
	p, err := kit.NewParams(declaration, with)
	if err != nil {
		t.Fatalf("NewParams(%v): %v", with, err)
	}
	r := kit.NewTestReport()
	return r, run(context.Background(), p, r)
}

// MustRun is Run for a run that must succeed: its error fails the test.
func MustRun(t testing.TB, declaration []byte, run kit.RunFunc, with map[string]any) *kit.Report {
	t.Helper()
	r, err := Run(t, declaration, run, with)
	if err != nil {
		t.Fatalf("run(%v): %v", with, err)
	}
	return r
}

// Probe is MustRun for a probe: it returns the result.
func Probe(t testing.TB, declaration []byte, run kit.RunFunc, with map[string]any) map[string]any {
	t.Helper()
	return MustRun(t, declaration, run, with).Result()
}

// CheckDeclaration checks a module's embedded declaration: it parses, follows the
// conventions of kit.CheckDeclaration (x-kind chaos or probe among them), and its title --
// the module's name, written nowhere else -- is the name of the test's package directory,
// which go test makes the working directory. Every module's main_test.go calls it:
//
//	func TestDeclaration(t *testing.T) { moduletest.CheckDeclaration(t, declaration) }
func CheckDeclaration(t testing.TB, declaration []byte) {
	t.Helper()
	if err := kit.CheckDeclaration(declaration); err != nil {
		t.Errorf("declaration: %v", err)
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("package directory: %v", err)
	}
	if err := checkName(declaration, filepath.Base(dir)); err != nil {
		t.Error(err)
	}
}

// checkName is CheckDeclaration's name check: the declaration names folder.
func checkName(declaration []byte, folder string) error {
	name, _, err := kit.Identity(declaration)
	if err != nil {
		return err
	}
	if name != folder {
		return fmt.Errorf("declaration: title %q differs from the module's folder name %q", name, folder)
	}
	return nil
}
