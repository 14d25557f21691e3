package scai_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/google/go-cmp/cmp"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// openPayload opens payload in an envelope with a dummy signature (Open
// does not check signatures).
func openPayload(payload []byte) (*scai.Opened, error) {
	return scai.Open(&dsse.Envelope{
		PayloadType: scai.PayloadType,
		Payload:     base64.StdEncoding.EncodeToString(payload),
		Signatures:  []dsse.Signature{{Sig: "AAAA"}},
	})
}

// TestOpenStrict: Open refuses every spelling of a statement that is not
// the JSON protojson writes, even where protojson itself (or encoding/json)
// would read it, so that a statement reads the same to every consumer.
func TestOpenStrict(t *testing.T) {
	k := seededKey(t, "strict")
	a := newAttestation(t, attest.PurposeAttest, k.Public())
	payload, err := scai.Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	p := string(payload)
	// replace replaces the first old with new, failing if old is absent.
	replace := func(s, old, new string) string {
		t.Helper()
		if !strings.Contains(s, old) {
			t.Fatalf("%q not in the payload", old)
		}
		return strings.Replace(s, old, new, 1)
	}
	keyContent := regexp.MustCompile(`"content":"([^"]*)"`).FindStringSubmatch(p)[1]
	if !strings.ContainsAny(keyContent, "+/") {
		t.Fatal("the env key's base64 has no + or /")
	}
	urlSafe := strings.NewReplacer("+", "-", "/", "_").Replace(keyContent)
	part := "ZmFrZSB0cG0vZW52LWtleS1wdWJsaWM=" // base64 of "fake tpm/env-key-public"
	deep := strings.Repeat("[", 100000) + strings.Repeat("]", 100000)

	reject := []struct {
		name, payload string
		want          error
	}{
		{"media_type alias", replace(p, `"mediaType"`, `"media_type"`), scai.ErrStatement},
		{"case-folded key", replace(p, `"mediaType"`, `"MediaType"`), scai.ErrStatement},
		{"type alias", replace(p, `"_type"`, `"type"`), scai.ErrStatement},
		{"predicate_type alias", replace(p, `"predicateType"`, `"predicate_type"`), scai.ErrStatement},
		{"subject field", replace(p, `"name":"env-key"}]`, `"name":"env-key","media_type":"x"}]`), scai.ErrStatement},
		{"subject null field", replace(p, `"name":"env-key"}]`, `"name":"env-key","uri":null}]`), scai.ErrStatement},
		{"URL-safe base64", replace(p, keyContent, urlSafe), scai.ErrStatement},
		{"unpadded base64", replace(p, part, strings.TrimRight(part, "=")), scai.ErrStatement},
		{"base64 with a line break", replace(p, part, part[:8]+`\n`+part[8:]), scai.ErrStatement},
		{"base64 with stray bits", replace(p, part, strings.Replace(part, "M=", "N=", 1)), scai.ErrStatement},
		{"empty content", replace(p, `"content":"`+part+`"`, `"content":""`), scai.ErrStatement},
		{"null annotations", replace(p, `"annotations":{"size":"6"}`, `"annotations":null`), scai.ErrStatement},
		{"null conditions", regexp.MustCompile(`"conditions":\{[^}]*\}`).ReplaceAllLiteralString(p, `"conditions":null`), scai.ErrStatement},
		{"null producer", replace(p, `"producer":{`, `"producer":null,"x":{`), scai.ErrStatement},
		{"empty uri", replace(p, `"uri":"https://github.com/attestd/attestd"`, `"uri":""`), scai.ErrStatement},
		{"empty attribute", replace(p, `"attribute":"attestd.dev/agent"`, `"attribute":""`), scai.ErrStatement},
		{"empty digest set", replace(p, `"digest":{"sha256":"e6f8`, `"digest":{},"x":{"sha256":"e6f8`), scai.ErrStatement},
		{"no attributes", regexp.MustCompile(`"attributes":\[.*\],"producer"`).ReplaceAllLiteralString(p, `"attributes":[],"producer"`), scai.ErrStatement},
		{"unknown assertion field", replace(p, `"attribute":"attestd.dev/env-key",`, `"attribute":"attestd.dev/env-key","extra":1,`), scai.ErrStatement},
		{"unknown report field", replace(p, `"producer":{`, `"extra":{},"producer":{`), scai.ErrStatement},
		{"duplicate statement key", replace(p, `{"_type":`, `{"predicateType":"x","_type":`), scai.ErrStatement},
		{"duplicate condition", replace(p, `"conditions":{`, `"conditions":{"nonce":"00",`), scai.ErrStatement},
		{"duplicate digest", replace(p, `"digest":{"sha256":"e6f8`, `"digest":{"sha256":"00","sha256":"e6f8`), scai.ErrStatement},
		{"duplicate descriptor field", replace(p, `"name":"attestd/cel"`, `"name":"x","name":"attestd/cel"`), scai.ErrStatement},
		{"duplicate annotation", replace(p, `"annotations":{"size":"6"}`, `"annotations":{"size":"7","size":"6"}`), scai.ErrStatement},
		{"duplicate attributes", replace(p, `"producer":{`, `"attributes":[],"producer":{`), scai.ErrStatement},
		{"number condition", replace(p, `"purpose":"attest"`, `"purpose":"attest","x":1`), scai.ErrStatement},
		{"trailing data", p + "{}", scai.ErrStatement},
		{"trailing garbage", p + "x", scai.ErrStatement},
		{"byte order mark", "\ufeff" + p, scai.ErrStatement},
		{"invalid UTF-8", replace(p, "v0.1.0-test", "v0.1.0-\xff"), scai.ErrStatement},
		{"lone surrogate", replace(p, "v0.1.0-test", `v0.1.0-\ud800`), scai.ErrStatement},
		{"bad escape", replace(p, "v0.1.0-test", `v0.1.0-\x41`), scai.ErrStatement},
		{"control character", replace(p, "v0.1.0-test", "v0.1.0-\x01"), scai.ErrStatement},
		{"nested too deeply", replace(p, `"purpose":"attest"`, `"purpose":"attest","x":`+deep), scai.ErrStatement},
		{"not an object", "[]", scai.ErrStatement},
		{"truncated", p[:len(p)-1], scai.ErrStatement},
		{"empty", "", scai.ErrEnvelope},
		{"predicate not an object", regexp.MustCompile(`"predicate":\{.*\},"predicateType"`).ReplaceAllLiteralString(p, `"predicate":"x","predicateType"`), scai.ErrStatement},
		{"other predicate", regexp.MustCompile(`"predicate":\{.*\},"predicateType":"[^"]*"`).ReplaceAllLiteralString(p,
			`"predicate":{"buildDefinition":{"n":[1,2.5e3,true,null,{}]}},"predicateType":"https://slsa.dev/provenance/v1"`), scai.ErrPredicateType},
		{"other predicate type", replace(p, scai.PredicateType, "https://slsa.dev/provenance/v1"), scai.ErrPredicateType},
	}
	// A completion that names no build (no buildId, no build attributes)
	// made Open dereference a nil build.
	c, err := scai.Encode(newAttestation(t, attest.PurposeComplete, k.Public()))
	if err != nil {
		t.Fatal(err)
	}
	noBuild := regexp.MustCompile(`"(buildId|ioDigest)":"[^"]*",|\{"attribute":"attestd\.dev/build/[a-z]*","target":\{"digest":\{[^}]*\},"name":"[^"]*"\}\},`).
		ReplaceAllLiteralString(string(c), "")
	if strings.Contains(noBuild, "attestd.dev/build/") || strings.Contains(noBuild, "buildId") {
		t.Fatal("the build was not removed")
	}
	reject = append(reject, struct {
		name, payload string
		want          error
	}{"completion without a build", noBuild, scai.ErrStatement})

	for _, tc := range reject {
		t.Run(tc.name, func(t *testing.T) {
			o, err := openPayload([]byte(tc.payload))
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v (opened: %v), want %v", err, o != nil, tc.want)
			}
		})
	}

	var indented bytes.Buffer
	if err := json.Indent(&indented, payload, "", "  "); err != nil {
		t.Fatal(err)
	}
	accept := []struct{ name, payload string }{
		{"canonical", p},
		{"indented", indented.String()},
		{"surrounding white space", " \r\n\t" + p + "\n "},
		{"escaped characters", replace(replace(p, `"name":"attestd"`, `"name":"\u0061ttestd"`), `"uri":"https://github.com/`, `"uri":"https:\/\/github.com/`)},
	}
	for _, tc := range accept {
		t.Run(tc.name, func(t *testing.T) {
			o, err := openPayload([]byte(tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(a, o.Attestation, cmpAttestation); d != "" {
				t.Errorf("attestation differs (-want +got):\n%s", d)
			}
		})
	}
}

// TestOpenDeepDescriptor: the deepest request descriptor CheckDescriptors
// accepts (its canonical JSON at most MaxDescriptorSize) still opens, and
// the bindings read it.
func TestOpenDeepDescriptor(t *testing.T) {
	k := seededKey(t, "deep")
	a := newAttestation(t, attest.PurposeDispatch, k.Public())
	depth := (scai.MaxDescriptorSize - len(`{"annotations":{"d":},"name":"deep"}`)) / 2
	v := structpb.NewListValue(&structpb.ListValue{})
	for i := 1; i < depth; i++ {
		v = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})
	}
	deep := &ita.ResourceDescriptor{Name: "deep", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{"d": v}}}
	if _, err := scai.CheckRequest([]*ita.ResourceDescriptor{deep}); err != nil {
		t.Fatalf("CheckRequest: %v", err)
	}
	a.Build.Request = append(a.Build.Request, deep)
	var err error
	if a.Binding, err = scai.ExpectedBinding(a); err != nil {
		t.Fatal(err)
	}
	payload, err := scai.Encode(a)
	if err != nil {
		t.Fatal(err)
	}
	o, err := openPayload(payload)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	// (cmp.Diff is far too slow on 4000 levels: compare the encodings.)
	again, err := scai.Encode(o.Attestation)
	if err != nil || !bytes.Equal(again, payload) {
		t.Errorf("the opened attestation encodes differently (%v)", err)
	}
	var st ita.Statement
	if err := protojson.Unmarshal(payload, &st); err != nil {
		t.Fatalf("protojson: %v", err)
	}
	// One level more and CheckRequest refuses it for its size.
	deeper := &ita.ResourceDescriptor{Name: "deep", Annotations: &structpb.Struct{Fields: map[string]*structpb.Value{
		"d": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{v}})}}}
	if _, err := scai.CheckRequest([]*ita.ResourceDescriptor{deeper}); !errors.Is(err, scai.ErrDescriptor) {
		t.Fatalf("CheckRequest of a descriptor over the size limit: %v", err)
	}
}
