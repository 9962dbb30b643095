package kit

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

var testDeclaration = []byte(`{
  "title": "t", "description": "A test module.", "x-kind": "chaos", "x-rank": 1,
  "type": "object",
  "properties": {
    "path":    {"type": "string", "pattern": "^/", "description": "A path."},
    "size_mb": {"type": "integer", "minimum": 1, "maximum": 1024, "description": "Size."},
    "ratio":   {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5, "description": "Ratio."},
    "mode":    {"type": "string", "enum": ["replace", "delete"], "default": "replace", "description": "Mode."},
    "force":   {"type": "boolean", "default": false, "description": "Force."},
    "servers": {"type": "array", "items": {"type": "string", "pattern": "^[0-9.]+$"}, "description": "Servers."},
    "ports":   {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}, "description": "Ports."},
    "level":   {"type": "integer", "enum": [1, 2, 3], "description": "Level."},
    "headers": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[^\\n]*$"}, "description": "Headers."}
  },
  "required": ["path", "size_mb"],
  "additionalProperties": false
}`)

func TestNewParamsValidation(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		wantErr []string // substrings, each must appear; empty = valid
	}{
		{"minimal valid", `{"path": "/x", "size_mb": 3}`, nil},
		{"integer as integral float", `{"path": "/x", "size_mb": 3.0}`, nil},
		{"all given", `{"path": "/x", "size_mb": 1024, "ratio": 1, "mode": "delete", "force": true,
			"servers": ["1.1.1.1"], "ports": [22, 80.0], "level": 2}`, nil},
		{"missing required", `{"path": "/x"}`, []string{"size_mb: required parameter is missing"}},
		{"unknown key", `{"path": "/x", "size_mb": 1, "sise_mb": 2}`, []string{"sise_mb: unknown parameter"}},
		{"fractional integer", `{"path": "/x", "size_mb": 1.5}`, []string{"size_mb: got 1.5; want an integer"}},
		{"string for integer", `{"path": "/x", "size_mb": "3"}`, []string{`size_mb: got "3"; want an integer`}},
		{"null", `{"path": null, "size_mb": 1}`, []string{"path: got null; want a string"}},
		{"below minimum", `{"path": "/x", "size_mb": 0}`, []string{"size_mb: 0 is less than the minimum 1"}},
		{"above maximum", `{"path": "/x", "size_mb": 1025}`, []string{"size_mb: 1025 is greater than the maximum 1024"}},
		{"number above maximum", `{"path": "/x", "size_mb": 1, "ratio": 1.5}`, []string{"ratio: 1.5 is greater than the maximum 1"}},
		{"enum", `{"path": "/x", "size_mb": 1, "mode": "insert"}`, []string{`mode: got "insert"; want one of "replace", "delete"`}},
		{"integer enum", `{"path": "/x", "size_mb": 1, "level": 4}`, []string{"level: got 4; want one of 1, 2, 3"}},
		{"pattern", `{"path": "x", "size_mb": 1}`, []string{`path: "x" does not match pattern "^/"`}},
		{"boolean", `{"path": "/x", "size_mb": 1, "force": "yes"}`, []string{`force: got "yes"; want a boolean`}},
		{"array type", `{"path": "/x", "size_mb": 1, "servers": "1.1.1.1"}`, []string{`servers: got "1.1.1.1"; want an array`}},
		{"array item type", `{"path": "/x", "size_mb": 1, "servers": ["1.1.1.1", 8]}`, []string{"servers[1]: got 8; want a string"}},
		{"array item pattern", `{"path": "/x", "size_mb": 1, "servers": ["dns"]}`, []string{`servers[0]: "dns" does not match`}},
		{"array item range", `{"path": "/x", "size_mb": 1, "ports": [0]}`, []string{"ports[0]: 0 is less than the minimum 1"}},
		{"object of strings", `{"path": "/x", "size_mb": 1, "headers": {"Host": "lab", "X-A": ""}}`, nil},
		{"object type", `{"path": "/x", "size_mb": 1, "headers": ["Host"]}`, []string{"headers: got an array; want an object"}},
		{"object value type", `{"path": "/x", "size_mb": 1, "headers": {"Host": 8}}`, []string{"headers.Host: got 8; want a string"}},
		{"object value pattern", `{"path": "/x", "size_mb": 1, "headers": {"Host": "a\nb"}}`, []string{`headers.Host: "a\nb" does not match`}},
		{"every error reported", `{"size_mb": 0, "bogus": 1}`, []string{"bogus: unknown", "size_mb: 0 is less", "path: required"}},
	}
	for _, c := range cases {
		var raw map[string]any
		if err := json.Unmarshal([]byte(c.raw), &raw); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, err := NewParams(testDeclaration, raw)
		if len(c.wantErr) == 0 {
			if err != nil {
				t.Errorf("%s: got error %q; want none", c.name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: got no error; want %q", c.name, c.wantErr)
			continue
		}
		for _, want := range c.wantErr {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: got %q; want it to contain %q", c.name, err, want)
			}
		}
	}
}

func TestParamsAccessorsAndDefaults(t *testing.T) {
	p, err := NewParams(testDeclaration, map[string]any{
		"path": "/x", "size_mb": float64(64), "servers": []string{"1.1.1.1", "9.9.9.9"}, "ports": []any{22, 80.0},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.String("path"); got != "/x" {
		t.Errorf("String: got %q; want %q", got, "/x")
	}
	if got := p.Int("size_mb"); got != 64 {
		t.Errorf("Int: got %d; want 64", got)
	}
	if got := p.Float("size_mb"); got != 64 {
		t.Errorf("Float of integer: got %v; want 64", got)
	}
	if got := p.Float("ratio"); got != 0.5 {
		t.Errorf("default Float: got %v; want 0.5", got)
	}
	if got := p.String("mode"); got != "replace" {
		t.Errorf("default String: got %q; want %q", got, "replace")
	}
	if got := p.Bool("force"); got {
		t.Errorf("default Bool: got %v; want false", got)
	}
	if got := p.Strings("servers"); !reflect.DeepEqual(got, []string{"1.1.1.1", "9.9.9.9"}) {
		t.Errorf("Strings: got %q; want %q", got, []string{"1.1.1.1", "9.9.9.9"})
	}
	if !p.Has("force") || !p.Has("path") || p.Has("level") {
		t.Errorf("Has: got force=%v path=%v level=%v; want true true false", p.Has("force"), p.Has("path"), p.Has("level"))
	}
	raw := p.Raw()
	if !reflect.DeepEqual(raw["ports"], []any{int64(22), int64(80)}) {
		t.Errorf("Raw ports: got %#v; want []any{22, 80} as int64", raw["ports"])
	}
	raw["path"] = "/changed"
	if got := p.String("path"); got != "/x" {
		t.Errorf("Raw must be a copy: got %q; want %q", got, "/x")
	}
}

func TestParamsPanicsOnUndeclaredName(t *testing.T) {
	p, err := NewParams(testDeclaration, map[string]any{"path": "/x", "size_mb": 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		v := recover()
		if v == nil || !strings.Contains(v.(string), `"pth" is not declared`) {
			t.Errorf("got panic %v; want one naming the undeclared parameter", v)
		}
	}()
	p.String("pth")
}

func TestNewParamsRejectsBadDeclarations(t *testing.T) {
	cases := []struct{ decl, want string }{
		{`{"properties": {"a": {"type": "object"}}}`, `a: an object parameter is a map of strings`},
		{`{"properties": {"a": {"type": "object", "additionalProperties": {"type": "integer"}}}}`, `a: an object parameter is a map of strings`},
		{`{"properties": {"a": {"type": "string", "pattern": "("}}}`, "a: pattern"},
		{`{"properties": {"a": {"type": "integer", "default": "x"}}}`, `default of a: got "x"; want an integer`},
		{`{"properties": {"a": {"type": "array"}}}`, "a: array without items"},
		{`{"properties": {}, "required": ["a"]}`, `required "a" is not a property`},
		{`not json`, "declaration:"},
	}
	for _, c := range cases {
		_, err := NewParams([]byte(c.decl), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v; want an error containing %q", c.decl, err, c.want)
		}
	}
}

func TestNewParamsAcceptsJSONNumbers(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(`{"path": "/x", "size_mb": 9007199254740993}`))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		t.Fatal(err)
	}
	decl := []byte(strings.Replace(string(testDeclaration), `"maximum": 1024, `, "", 1))
	p, err := NewParams(decl, raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Int("size_mb"); got != 9007199254740993 {
		t.Errorf("got %d; want 9007199254740993", got)
	}
}
