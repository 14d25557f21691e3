package yamlfile

import (
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"
)

type hex4 [4]byte

func (h *hex4) UnmarshalYAML(n *yaml.Node) error {
	b, err := hex.DecodeString(n.Value)
	if err != nil || len(b) != 4 {
		return fmt.Errorf("want 8 hex digits, got %q", n.Value)
	}
	*h = hex4(b)
	return nil
}

type doc struct {
	Name   string            `yaml:"name"`
	Count  int8              `yaml:"count"`
	UID    uint32            `yaml:"uid"`
	On     bool              `yaml:"on"`
	Wait   time.Duration     `yaml:"wait"`
	Opt    *int              `yaml:"opt"`
	Tags   []string          `yaml:"tags"`
	Values map[string][]hex4 `yaml:"values"`
	Inner  struct {
		A int `yaml:"a"`
	} `yaml:"inner"`
	ignored int
}

func TestDecode(t *testing.T) {
	var d doc
	raw := "name: x\ncount: -3\nuid: 7\non: true\nwait: 15m\nopt: 4\ntags: [a, b]\nvalues:\n  k: [\"00112233\"]\ninner:\n  a: 2\n"
	nodes, err := Decode([]byte(raw), &d)
	if err != nil {
		t.Fatal(err)
	}
	four := 4
	want := doc{Name: "x", Count: -3, UID: 7, On: true, Wait: 15 * time.Minute, Opt: &four, Tags: []string{"a", "b"},
		Values: map[string][]hex4{"k": {{0x00, 0x11, 0x22, 0x33}}}}
	want.Inner.A = 2
	if diff := cmp.Diff(want, d, cmp.AllowUnexported(doc{})); diff != "" {
		t.Errorf("decoded (-want +got):\n%s", diff)
	}
	if e := nodes.Errorf("values.k[0]", "bad"); e.Line != 9 {
		t.Errorf("Errorf line = %d, want 9", e.Line)
	}
	if e := nodes.Errorf("absent.key", "bad"); e.Line != 0 || e.Error() != "absent.key: bad" {
		t.Errorf("Errorf for an absent key = %+v", e)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"nme: x\n", "line 1: nme: unknown key (known here: count, inner, name, on, opt, tags, uid, values, wait)"},
		{"name: x\nname: y\n", "line 2: name: key given twice"},
		{"count: 300\n", `line 1: count: want an integer from -128 to 127, got "300"`},
		{"count: abc\n", `line 1: count: want an integer from -128 to 127, got "abc"`},
		{"uid: -1\n", `line 1: uid: want an integer from 0 to 4294967295, got "-1"`},
		{"on: maybe\n", "line 1: on: want true or false"},
		{"wait: soon\n", `line 1: wait: want a duration such as 30s or 15m, got "soon"`},
		{"tags: a\n", "line 1: tags: want a list"},
		{"name: [a]\n", "line 1: name: want a string"},
		{"values:\n  k: [\"zz\"]\n", `line 2: values.k[0]: want 8 hex digits, got "zz"`},
		{"values:\n  k: []\n  k: []\n", "line 3: values.k: key given twice"},
		{"inner:\n  b: 1\n", "line 2: inner.b: unknown key (known here: a)"},
		{"name: &a x\ntags: [*a]\n", "line 1: name: YAML anchors and aliases are not allowed here"},
		{"name: x\n  bad: indent\n", "line 2: mapping values are not allowed in this context"},
	} {
		t.Run(tc.raw, func(t *testing.T) {
			var d doc
			_, err := Decode([]byte(tc.raw), &d)
			var ye *Error
			if !errors.As(err, &ye) {
				t.Fatalf("Decode = %v, want an *Error", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error = %q\nwant    %q", err, tc.want)
			}
		})
	}
}

func TestDecodeEmpty(t *testing.T) {
	d := doc{Name: "default"}
	if _, err := Decode([]byte("# only a comment\n"), &d); err != nil || d.Name != "default" {
		t.Errorf("Decode(empty) = %v, name %q", err, d.Name)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("name: x\ncount: 1\nvalues:\n  k: [\"00112233\"]\n"))
	f.Add([]byte("inner: {a: 1}\ntags: [a]\nwait: 1s\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var d doc
		if _, err := Decode(raw, &d); err != nil {
			var ye *Error
			if !errors.As(err, &ye) {
				t.Fatalf("error of another type: %T %v", err, err)
			}
		}
	})
}
