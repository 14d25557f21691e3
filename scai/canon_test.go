package scai

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"math"
	"strings"
	"testing"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// protojsonCanonical is how attestd computed a descriptor's canonical JSON
// before issue 12: protojson, decoded and re-encoded by encoding/json. The
// direct encoder must give the same bytes and fail on the same inputs.
func protojsonCanonical(rd *ita.ResourceDescriptor) ([]byte, error) {
	b, err := protojson.Marshal(rd)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func compareCanonical(t *testing.T, rd *ita.ResourceDescriptor) {
	t.Helper()
	want, werr := protojsonCanonical(rd)
	got, gerr := canonicalDescriptor(rd)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("descriptor %v: protojson path err %v, direct err %v", rd, werr, gerr)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("descriptor %v:\ndirect   %s\nprotojson %s", rd, got, want)
	}
}

func mustStruct(t testing.TB, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func nested(depth int) *structpb.Value {
	v := structpb.NewStringValue("leaf")
	for i := 0; i < depth; i++ {
		if i%2 == 0 {
			v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
		} else {
			v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"k": v}})
		}
	}
	return v
}

func canonCorpus(t testing.TB) []*ita.ResourceDescriptor {
	sha := strings.Repeat("ab", 32)
	return []*ita.ResourceDescriptor{
		nil,
		{},
		{Name: "app"},
		{Name: "app", Digest: map[string]string{"sha256": sha}},
		{Name: "source", Uri: "git+https://example.com/repo", Digest: map[string]string{"gitCommit": strings.Repeat("a", 40), "sha256": sha, "sha1": strings.Repeat("c", 40)}},
		{Name: "entryPoint", Content: []byte("make release")},
		{Name: "bin", Content: []byte{0xff, 0xfe, 0, 1, 2, 0x3e, 0x3f}, DownloadLocation: "https://dl.example.com/a?b=c&d=<e>", MediaType: "application/octet-stream"},
		{Content: []byte{}, Name: "", Uri: "u"},
		{Name: `quote " backslash \ slash / <>&'`},
		{Name: "controls \x00\x01\b\f\n\r\t\x1f\x7f", Uri: "unicode é ü 日本 😀 \u2028 \u2029 \u00a0 \ufeff"},
		{Name: "empty annotations", Annotations: &structpb.Struct{}},
		{Name: "annotations", Annotations: mustStruct(t, map[string]any{
			"string": "value", "empty": "", "true": true, "false": false, "null": nil,
			"int": 42, "neg": -7, "zero": 0, "big": 1e21, "bigger": 1.5e300, "small": 1e-7, "tiny": 5e-324,
			"frac": 0.1, "third": 1.0 / 3, "maxint": float64(1<<53 + 1), "e20": 1e20, "negzero": math.Copysign(0, -1),
			"list": []any{1, "two", []any{3.5, nil}, map[string]any{"z": 1, "a": 2}}, "emptylist": []any{}, "emptyobj": map[string]any{},
			"nested": map[string]any{"b": map[string]any{"c": map[string]any{"d": "<&>"}}, "a": "x"},
			"<html>": "&amp;", "": "empty key", "Ü": "upper", "a\u2028b": "\u2029", "ключ": "значение", "z\x00": "nul",
		})},
		{Name: "nil kinds", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{
			"list": {Kind: &structpb.Value_ListValue{}}, "struct": {Kind: &structpb.Value_StructValue{}},
			"weird null": {Kind: &structpb.Value_NullValue{NullValue: 5}},
		}}},
		{Name: "deep", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"d": nested(200)}}},
		{Name: "depth 9998", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"d": nested(9998)}}},
		{Name: "depth 9999", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"d": nested(9999)}}},
		// Inputs both paths refuse.
		{Name: "bad \xff utf-8"},
		{Name: "x", Digest: map[string]string{"sha256": "\xfe"}},
		{Name: "x", Digest: map[string]string{"\xfe": "00"}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"\xff": structpb.NewNullValue()}}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"s": structpb.NewStringValue("\xc3")}}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"nokind": {}}}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"nilvalue": nil}}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{nil}})}}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"nan": structpb.NewNumberValue(math.NaN())}}},
		{Name: "x", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"inf": structpb.NewNumberValue(math.Inf(-1))}}},
		{Name: "depth 10000", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"d": nested(10000)}}},
	}
}

// TestCanonicalDescriptor checks the direct canonical encoder against the
// protojson → encoding/json path it replaced.
func TestCanonicalDescriptor(t *testing.T) {
	for i, rd := range canonCorpus(t) {
		if rd != nil && strings.HasPrefix(rd.GetName(), "depth") && testing.Short() {
			continue
		}
		t.Run(rd.GetName(), func(t *testing.T) {
			_ = i
			compareCanonical(t, rd)
		})
	}
}

// TestDescriptorDigestVectors pins RequestDigest and IODigest: they are part
// of the format (docs/formats.md, section 1). The values were computed with
// the protojson path before issue 12.
func TestDescriptorDigestVectors(t *testing.T) {
	req := []*ita.ResourceDescriptor{
		{Name: "source", Uri: "git+https://example.com/repo", Digest: map[string]string{"gitCommit": strings.Repeat("a", 40)}},
		{Name: "entryPoint", Content: []byte("make release")},
		{Name: "tenant <&>", Annotations: mustStruct(t, map[string]any{"id": 7, "tags": []any{"a", true, nil}, "ü": 0.5})},
	}
	inputs := []*ita.ResourceDescriptor{{Name: "dep.tar.gz", Digest: map[string]string{"sha256": strings.Repeat("b", 64)}}}
	outputs := []*ita.ResourceDescriptor{
		{Name: "app", Digest: map[string]string{"sha256": strings.Repeat("c", 64)}},
		{Name: "app.sbom", Digest: map[string]string{"sha256": strings.Repeat("d", 64), "sha512": strings.Repeat("e", 128)}, MediaType: "application/spdx+json"},
	}
	for _, tc := range []struct {
		name string
		got  func() ([32]byte, error)
		want string
	}{
		{"RequestDigest", func() ([32]byte, error) { return RequestDigest(req) }, "59edeafabc40d2016d412972867fa097c20fc5597c414b42e1267f8beaa6c16c"},
		{"CheckRequest", func() ([32]byte, error) { return CheckRequest(req) }, "59edeafabc40d2016d412972867fa097c20fc5597c414b42e1267f8beaa6c16c"},
		{"IODigest", func() ([32]byte, error) { return IODigest(inputs, outputs) }, "bb137828779fda4b4aaf26106ec77a2a8868f42579cf74233ef01d8e26cdf372"},
		{"CheckIO", func() ([32]byte, error) { return CheckIO(inputs, outputs) }, "bb137828779fda4b4aaf26106ec77a2a8868f42579cf74233ef01d8e26cdf372"},
		{"empty request", func() ([32]byte, error) { return RequestDigest(nil) }, "308e4f50ca7765fc10ea16270fe01c15c003efcb3c0c01209ab122fa57966dad"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.got()
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(d[:]); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzCanonicalDescriptor compares the direct canonical encoder with the
// protojson path on descriptors decoded from fuzzed JSON, and on fields
// taken raw from the fuzzer (invalid UTF-8, NaN).
func FuzzCanonicalDescriptor(f *testing.F) {
	for _, rd := range canonCorpus(f) {
		if rd == nil || strings.HasPrefix(rd.GetName(), "depth") {
			continue
		}
		if b, err := protojson.Marshal(rd); err == nil {
			f.Add(b, rd.GetName(), rd.GetContent(), "k", 1.5)
		}
	}
	f.Add([]byte(`{"name":"n","annotations":{"a":[1,2.50,-0,1e400]}}`), "\xff", []byte(nil), "\u2028", math.NaN())
	f.Fuzz(func(t *testing.T, js []byte, s string, content []byte, key string, num float64) {
		var rd ita.ResourceDescriptor
		if protojson.Unmarshal(js, &rd) == nil {
			compareCanonical(t, &rd)
		}
		raw := &ita.ResourceDescriptor{Name: s, Content: content, Digest: map[string]string{key: s},
			Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{
				key: structpb.NewNumberValue(num),
				s:   structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewStringValue(key), structpb.NewBoolValue(len(s) > 2)}}),
			}}}
		compareCanonical(t, raw)
	})
}
