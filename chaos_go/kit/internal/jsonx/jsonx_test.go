package jsonx

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

type inner struct {
	A int `json:"a"`
}

type change struct {
	Action string         `json:"action"`
	Path   string         `json:"path,omitempty"`
	Before any            `json:"before,omitempty"`
	After  any            `json:"after,omitempty"`
	Detail map[string]any `json:"detail,omitempty"`
	skip   int
	Dash   int `json:"-"`
	Plain  uint16
	inner
}

type kind string

type hidden struct {
	Any  any `json:"any"`
	Name string
}

type wrapper struct {
	hidden
	Top int
}

// stdMarshal is encoding/json without HTML escaping, the reference for Marshal.
func stdMarshal(t *testing.T, v any) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatalf("encoding/json: %v", err)
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func TestMarshalMatchesEncodingJSON(t *testing.T) {
	now := time.Date(2024, 11, 28, 12, 0, 0, 123456789, time.UTC)
	ptr := 7
	values := []any{
		nil, true, false, 0, -12, int64(math.MaxInt64), uint64(math.MaxUint64), int8(-3), uint8(200),
		0.0, 1.5, -2.25, 1e21, 1e20, 1e-7, 0.000001, 123456789.125, float32(0.1), float32(1e-8), 3.0,
		"", "plain", "quote \" backslash \\ slash /", "ctl \x00\x01\x1f\t\n\r\b\f", "<html> & é ✓ 😀",
		"\u2028\u2029", "bad utf8 \xff\xfe end",
		[]any{}, []any{1, "a", nil, []any{true}}, []string{"a", "b"}, []int{1, 2}, []int64(nil), []byte("bytes!"),
		[2]string{"x", "y"},
		map[string]any{}, map[string]any{"b": 1, "a": []any{map[string]any{"z": nil}}},
		map[string]string{"k": "v"}, map[int]string{2: "two", 10: "ten"}, map[string]any(nil),
		change{Action: "chmod", Path: "/x", Before: "0644", Detail: map[string]any{"uid": 0}, Plain: 3, inner: inner{A: 9}},
		change{Action: "noop"},
		[]change{{Action: "a"}, {Action: "b", After: 0}},
		&ptr, (*int)(nil), kind("chaos"), now,
		wrapper{hidden: hidden{Any: map[string]any{"x": []any{1}}, Name: "n"}, Top: 1},
		map[string]any{"t": "result", "ok": false, "error": nil, "result": map[string]any{"pid": 123}},
	}
	for _, v := range values {
		got, err := Marshal(v)
		if err != nil {
			t.Errorf("%#v: got error %v", v, err)
			continue
		}
		if want := stdMarshal(t, v); string(got) != want {
			t.Errorf("%#v: got %s; want %s", v, got, want)
		}
	}
}

func TestMarshalRejectsUnsupportedValues(t *testing.T) {
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	for _, v := range []any{math.NaN(), math.Inf(1), func() {}, make(chan int), map[float64]int{1: 1}, cyclic, Number("01")} {
		_, err := Marshal(v)
		var ue *UnsupportedError
		if !errors.As(err, &ue) {
			t.Errorf("%T: got %v; want an UnsupportedError", v, err)
		}
	}
}

func TestDecodeMatchesEncodingJSON(t *testing.T) {
	inputs := []string{
		`null`, `true`, `false`, `0`, `-0`, `12.5e3`, `-1E-2`, `"x"`, ` {"a" : [1, 2, {"b": null}], "c": "d"} `,
		`"esc \" \\ \/ \b \f \n \r \t \u00e9 \u2028 \ud83d\ude00"`, `"lone \ud800 surrogate"`, `"lone \udc00"`,
		`"pair broken \ud83d\u0041"`, `{"dup": 1, "dup": 2}`, `[]`, `{}`, `[[[]]]`, "\"raw \xff utf8\"",
		`12345678901234567890`,
	}
	for _, in := range inputs {
		var want any
		if err := json.Unmarshal([]byte(in), &want); err != nil {
			t.Fatalf("%s: encoding/json: %v", in, err)
		}
		got, err := Decode([]byte(in), false)
		if err != nil {
			t.Errorf("%s: got error %v", in, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %#v; want %#v", in, got, want)
		}
	}
}

func TestDecodeRejectsInvalidJSON(t *testing.T) {
	inputs := []string{
		``, ` `, `nul`, `tru`, `01`, `1.`, `.5`, `-`, `1e`, `+1`, `"unterminated`, `"ctl` + "\x01" + `"`,
		`"\x"`, `"\u12"`, `{"a" 1}`, `{"a":1,}`, `[1,]`, `[1 2]`, `{a:1}`, `{"a":1}x`, `NaN`, `[`, `{"a":`,
		strings.Repeat("[", maxDepth+2) + strings.Repeat("]", maxDepth+2),
	}
	for _, in := range inputs {
		if _, err := Decode([]byte(in), false); err == nil {
			t.Errorf("%q: got no error; want a syntax error", in)
		}
	}
}

func TestDecodeKeepsNumberText(t *testing.T) {
	v, err := DecodeObject([]byte(`{"n": 9007199254740993, "f": 1.50}`), true)
	if err != nil {
		t.Fatal(err)
	}
	if v["n"] != Number("9007199254740993") || v["f"] != Number("1.50") {
		t.Errorf("got %#v; want the literal numbers", v)
	}
	if n, _ := v["n"].(Number).Int64(); n != 9007199254740993 {
		t.Errorf("Int64: got %d; want 9007199254740993", n)
	}
}

func FuzzDecodeAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,"b",null,true]}`, `"\ud83d\ude00"`, `-0.5e+3`, `[`, `"\u"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Decode([]byte(in), false)
		var want any
		stdErr := json.Unmarshal([]byte(in), &want)
		if (stdErr == nil) != (err == nil) {
			t.Fatalf("%q: encoding/json error %v, Decode error %v", in, stdErr, err)
		}
		if err != nil {
			return
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: got %#v; want %#v", in, got, want)
		}
		out, err := Marshal(got)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", got, err)
		}
		back, err := Decode(out, false)
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Fatalf("round trip %q: got %#v, %v; want %#v", out, back, err, got)
		}
	})
}
