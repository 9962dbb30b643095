package kit

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"chaosrun/chaos_go/kit/internal/jsonx"
)

// declaration is the subset of a params.schema.json that the kit understands
// (docs/module-authoring.md): top-level properties, required, additionalProperties.
type declaration struct {
	Title                string
	Description          string
	Kind                 string // x-kind
	Rank                 int64  // x-rank, 0 if absent
	Type                 string
	Properties           map[string]*property
	Required             []string
	AdditionalProperties *bool
}

// property is one parameter's schema (also used for an array's items).
type property struct {
	Type        string
	Description string
	Enum        []any
	Minimum     *float64
	Maximum     *float64
	Pattern     string
	Default     any
	Items       *property
	Values      *property // an object's additionalProperties: a map of strings

	re *regexp.Regexp
}

// parseDeclaration decodes and checks a declaration, compiling its patterns.
func parseDeclaration(raw []byte) (*declaration, error) {
	obj, err := jsonx.DecodeObject(raw, true)
	if err != nil {
		return nil, fmt.Errorf("declaration: %w", err)
	}
	f := fields{obj: obj}
	d := declaration{
		Title:       f.str("title"),
		Description: f.str("description"),
		Kind:        f.str("x-kind"),
		Rank:        f.integer("x-rank"),
		Type:        f.str("type"),
		Properties:  map[string]*property{},
	}
	if _, ok := obj["additionalProperties"]; ok {
		b := f.boolean("additionalProperties")
		d.AdditionalProperties = &b
	}
	for i, r := range f.array("required") {
		name, ok := r.(string)
		if !ok {
			return nil, fmt.Errorf("declaration: required[%d]: got %s; want a string", i, describe(r))
		}
		d.Required = append(d.Required, name)
	}
	props := f.object("properties")
	if f.err != nil {
		return nil, fmt.Errorf("declaration: %w", f.err)
	}
	for name, raw := range props {
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("declaration: %s: got %s; want an object", name, describe(raw))
		}
		p, err := parseProperty(name, m)
		if err != nil {
			return nil, fmt.Errorf("declaration: %w", err)
		}
		d.Properties[name] = p
	}
	if d.Type != "" && d.Type != "object" {
		return nil, fmt.Errorf("declaration: type is %q; want \"object\"", d.Type)
	}
	if d.Properties == nil {
		d.Properties = map[string]*property{}
	}
	for _, name := range sortedKeys(d.Properties) {
		p := d.Properties[name]
		if err := p.compile(name); err != nil {
			return nil, fmt.Errorf("declaration: %w", err)
		}
		if p.Default != nil {
			if _, err := p.check(name, p.Default); err != nil {
				return nil, fmt.Errorf("declaration: default of %w", err)
			}
		}
	}
	for _, name := range d.Required {
		if _, ok := d.Properties[name]; !ok {
			return nil, fmt.Errorf("declaration: required %q is not a property", name)
		}
	}
	return &d, nil
}

// parseProperty reads one parameter's schema from its decoded JSON object.
func parseProperty(name string, m map[string]any) (*property, error) {
	f := fields{obj: m}
	p := &property{
		Type:        f.str("type"),
		Description: f.str("description"),
		Minimum:     f.number("minimum"),
		Maximum:     f.number("maximum"),
		Pattern:     f.str("pattern"),
		Default:     m["default"],
	}
	if _, ok := m["enum"]; ok {
		p.Enum = f.array("enum")
	}
	items := f.object("items")
	values := f.object("additionalProperties")
	if f.err != nil {
		return nil, fmt.Errorf("%s: %w", name, f.err)
	}
	if items != nil {
		it, err := parseProperty(name+"[]", items)
		if err != nil {
			return nil, err
		}
		p.Items = it
	}
	if values != nil {
		v, err := parseProperty(name+"{}", values)
		if err != nil {
			return nil, err
		}
		p.Values = v
	}
	return p, nil
}

func (p *property) compile(name string) error {
	switch p.Type {
	case "string", "integer", "number", "boolean":
	case "object":
		if p.Values == nil || p.Values.Type != "string" {
			return fmt.Errorf("%s: an object parameter is a map of strings: additionalProperties {\"type\": \"string\"}", name)
		}
		if err := p.Values.compile(name + "{}"); err != nil {
			return err
		}
	case "array":
		if p.Items == nil {
			return fmt.Errorf("%s: array without items", name)
		}
		if p.Items.Type == "array" {
			return fmt.Errorf("%s: arrays of arrays are not supported", name)
		}
		if err := p.Items.compile(name + "[]"); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s: unsupported type %q", name, p.Type)
	}
	if p.Pattern != "" {
		re, err := regexp.Compile(p.Pattern)
		if err != nil {
			return fmt.Errorf("%s: pattern: %w", name, err)
		}
		p.re = re
	}
	return nil
}

// check validates v against p and returns it normalized: integers as int64, numbers as
// float64, arrays as []any of normalized items.
func (p *property) check(name string, v any) (any, error) {
	var out any
	switch p.Type {
	case "string":
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%s: got %s; want a string", name, describe(v))
		}
		if p.re != nil && !p.re.MatchString(s) {
			return nil, fmt.Errorf("%s: %q does not match pattern %q", name, s, p.Pattern)
		}
		out = s
	case "integer":
		n, ok := toInt(v)
		if !ok {
			return nil, fmt.Errorf("%s: got %s; want an integer", name, describe(v))
		}
		if err := p.checkRange(name, float64(n)); err != nil {
			return nil, err
		}
		out = n
	case "number":
		f, ok := toFloat(v)
		if !ok {
			return nil, fmt.Errorf("%s: got %s; want a number", name, describe(v))
		}
		if err := p.checkRange(name, f); err != nil {
			return nil, err
		}
		out = f
	case "boolean":
		b, ok := v.(bool)
		if !ok {
			return nil, fmt.Errorf("%s: got %s; want a boolean", name, describe(v))
		}
		out = b
	case "array":
		items, ok := toSlice(v)
		if !ok {
			return nil, fmt.Errorf("%s: got %s; want an array", name, describe(v))
		}
		norm := make([]any, len(items))
		for i, item := range items {
			n, err := p.Items.check(fmt.Sprintf("%s[%d]", name, i), item)
			if err != nil {
				return nil, err
			}
			norm[i] = n
		}
		out = norm
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: got %s; want an object", name, describe(v))
		}
		norm := make(map[string]any, len(m))
		for _, k := range sortedKeys(m) {
			n, err := p.Values.check(name+"."+k, m[k])
			if err != nil {
				return nil, err
			}
			norm[k] = n
		}
		out = norm
	}
	if len(p.Enum) > 0 && !p.inEnum(out) {
		return nil, fmt.Errorf("%s: got %s; want one of %s", name, describe(out), enumList(p.Enum))
	}
	return out, nil
}

func (p *property) checkRange(name string, f float64) error {
	if p.Minimum != nil && f < *p.Minimum {
		return fmt.Errorf("%s: %s is less than the minimum %s", name, fmtNum(f), fmtNum(*p.Minimum))
	}
	if p.Maximum != nil && f > *p.Maximum {
		return fmt.Errorf("%s: %s is greater than the maximum %s", name, fmtNum(f), fmtNum(*p.Maximum))
	}
	return nil
}

func (p *property) inEnum(v any) bool {
	for _, e := range p.Enum {
		switch x := v.(type) {
		case string:
			if s, ok := e.(string); ok && s == x {
				return true
			}
		case bool:
			if b, ok := e.(bool); ok && b == x {
				return true
			}
		case int64:
			if f, ok := toFloat(e); ok && f == float64(x) {
				return true
			}
		case float64:
			if f, ok := toFloat(e); ok && f == x {
				return true
			}
		}
	}
	return false
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	case uint8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case uint:
		if uint64(x) > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case float32:
		return floatToInt(float64(x))
	case float64:
		return floatToInt(x)
	case numberLike:
		if n, err := x.Int64(); err == nil {
			return n, true
		}
		if f, err := x.Float64(); err == nil {
			return floatToInt(f)
		}
	}
	return 0, false
}

// numberLike is a number kept as text: jsonx.Number from the config, or an
// encoding/json Number a test might pass (matched by its methods, so the kit does not link
// encoding/json).
type numberLike interface {
	String() string
	Float64() (float64, error)
	Int64() (int64, error)
}

func floatToInt(f float64) (int64, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) || f != math.Trunc(f) || f < -(1<<63) || f >= 1<<63 {
		return 0, false
	}
	return int64(f), true
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, !math.IsNaN(x) && !math.IsInf(x, 0)
	case float32:
		return toFloat(float64(x))
	case numberLike:
		f, err := x.Float64()
		return f, err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
	}
	if n, ok := toInt(v); ok {
		return float64(n), true
	}
	return 0, false
}

func toSlice(v any) ([]any, bool) {
	switch x := v.(type) {
	case []any:
		return x, true
	case []string:
		out := make([]any, len(x))
		for i, s := range x {
			out[i] = s
		}
		return out, true
	case []int:
		out := make([]any, len(x))
		for i, n := range x {
			out[i] = n
		}
		return out, true
	case []int64:
		out := make([]any, len(x))
		for i, n := range x {
			out[i] = n
		}
		return out, true
	case []float64:
		out := make([]any, len(x))
		for i, n := range x {
			out[i] = n
		}
		return out, true
	}
	return nil, false
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case bool:
		return strconv.FormatBool(x)
	case numberLike:
		return x.String()
	case float64:
		return fmtNum(x)
	case float32:
		return fmtNum(float64(x))
	case map[string]any:
		return "an object"
	}
	if n, ok := toInt(v); ok {
		return strconv.FormatInt(n, 10)
	}
	if _, ok := toSlice(v); ok {
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func enumList(enum []any) string {
	parts := make([]string, len(enum))
	for i, e := range enum {
		parts[i] = describe(e)
	}
	return strings.Join(parts, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Params holds a module's parameters, validated against its declaration, with defaults
// applied. Build one with NewParams.
type Params struct {
	decl   *declaration
	values map[string]any
}

// NewParams validates raw against the declaration (required parameters, unknown keys when
// additionalProperties is false, types -- an integer may arrive as an integer-valued float64 --,
// enum, minimum/maximum, pattern, array item types) and applies defaults. Every problem is
// reported, one per line, each naming its parameter.
func NewParams(declarationJSON []byte, raw map[string]any) (Params, error) {
	d, err := parseDeclaration(declarationJSON)
	if err != nil {
		return Params{}, err
	}
	return newParams(d, raw)
}

// newParams is NewParams for a parsed declaration.
func newParams(d *declaration, raw map[string]any) (Params, error) {
	values := make(map[string]any, len(d.Properties))
	var errs []error
	for _, name := range sortedKeys(raw) {
		p, ok := d.Properties[name]
		if !ok {
			if d.AdditionalProperties != nil && !*d.AdditionalProperties {
				errs = append(errs, fmt.Errorf("%s: unknown parameter", name))
			}
			continue
		}
		v, err := p.check(name, raw[name])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		values[name] = v
	}
	for _, name := range d.Required {
		if _, ok := raw[name]; !ok {
			errs = append(errs, fmt.Errorf("%s: required parameter is missing", name))
		}
	}
	for _, name := range sortedKeys(d.Properties) {
		p := d.Properties[name]
		if _, given := raw[name]; !given && p.Default != nil {
			v, _ := p.check(name, p.Default) // checked by parseDeclaration
			values[name] = v
		}
	}
	if len(errs) > 0 {
		return Params{}, errors.Join(errs...)
	}
	return Params{decl: d, values: values}, nil
}

// get returns a parameter's value, panicking on a name the declaration does not have:
// that is a typo in the module, and the kit turns the panic into a failed result.
func (p Params) get(name, want string) (any, bool) {
	if p.decl == nil {
		panic(fmt.Sprintf("kit: parameter %q read from Params not made by NewParams", name))
	}
	prop, ok := p.decl.Properties[name]
	if !ok {
		panic(fmt.Sprintf("kit: parameter %q is not declared", name))
	}
	if want != "" && prop.Type != want && !(want == "number" && prop.Type == "integer") {
		panic(fmt.Sprintf("kit: parameter %q is declared %s, read as %s", name, prop.Type, want))
	}
	v, ok := p.values[name]
	return v, ok
}

// String returns a string parameter, or "" when it was neither given nor defaulted.
func (p Params) String(name string) string {
	v, _ := p.get(name, "string")
	s, _ := v.(string)
	return s
}

// Int returns an integer parameter, or 0.
func (p Params) Int(name string) int64 {
	v, _ := p.get(name, "integer")
	n, _ := v.(int64)
	return n
}

// Float returns a number (or integer) parameter, or 0.
func (p Params) Float(name string) float64 {
	v, _ := p.get(name, "number")
	f, _ := toFloat(v)
	return f
}

// Bool returns a boolean parameter, or false.
func (p Params) Bool(name string) bool {
	v, _ := p.get(name, "boolean")
	b, _ := v.(bool)
	return b
}

// Strings returns an array parameter's items as strings (non-string items formatted), or nil.
func (p Params) Strings(name string) []string {
	v, _ := p.get(name, "array")
	items, _ := v.([]any)
	if items == nil {
		return nil
	}
	out := make([]string, len(items))
	for i, item := range items {
		if s, ok := item.(string); ok {
			out[i] = s
		} else {
			out[i] = fmt.Sprint(item)
		}
	}
	return out
}

// StringMap returns an object parameter (a map of strings), or nil.
func (p Params) StringMap(name string) map[string]string {
	v, _ := p.get(name, "object")
	m, _ := v.(map[string]any)
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, item := range m {
		out[k], _ = item.(string)
	}
	return out
}

// Has reports whether a parameter was given or defaulted.
func (p Params) Has(name string) bool {
	_, ok := p.get(name, "")
	return ok
}

// Raw returns a copy of the normalized values (integers int64, numbers float64, arrays []any).
func (p Params) Raw() map[string]any {
	out := make(map[string]any, len(p.values))
	for k, v := range p.values {
		out[k] = v
	}
	return out
}
