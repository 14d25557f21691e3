package verify_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	svrpb "github.com/in-toto/attestation/go/predicates/svr/v01"
	vsapb "github.com/in-toto/attestation/go/predicates/vsa/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// resultOpts are the options of every golden result.
var resultOpts = verify.ResultOptions{
	VerifierID: "https://attestd.dev/attestctl",
	Version:    "v0.0.0-test",
	PolicyURI:  "https://example.com/attestd/policy.yaml",
	BundleURI:  "https://example.com/builds/build-1/bundle.intoto.jsonl",
	Time:       teeNow,
}

// Run-specific values (fresh keys each run) are replaced in golden files
// by these.
var (
	goldenEnvKey = strings.Repeat("e", 64)
	goldenBundle = strings.Repeat("b", 64)
	goldenPolicy = strings.Repeat("c", 64)
)

// resultCase is one golden verification result, made from a real bundle.
type resultCase struct {
	golden        string // file name in testdata/results
	predicateType string
	eval          func(t *testing.T, f *fixtures) (*verify.Evaluation, *verify.BundleEvaluation)
	want          []string // verifiedLevels (VSA) or properties (SVR)
}

// wholeBundle: every envelope of a bundle.
const wholeBundle = -1

// snpEval evaluates the SEV-SNP environment's envelopes before upto (wholeBundle:
// every one) under a policy pinning its measurement (pin) or not, with opts changed
// by mut.
func snpEval(upto int, pin bool, mut func(o *verify.Options)) func(t *testing.T, f *fixtures) (*verify.Evaluation, *verify.BundleEvaluation) {
	return func(t *testing.T, f *fixtures) (*verify.Evaluation, *verify.BundleEvaluation) {
		t.Helper()
		e := f.snp
		y := "version: 1\n"
		if pin {
			y += "trust: {snp: {measurements: ['" + hex.EncodeToString(snpMeasurement(t, e)) + "']}}\n"
		}
		tp := withPolicy(e, parsePolicy(t, y))
		if upto != wholeBundle {
			tp.inputs = one(e, e.bundle[:upto]).inputs
		}
		if upto != wholeBundle && upto <= iDispatch {
			// No dispatch or completion to expect yet.
			tp.opts.BuildID = ""
			delete(tp.opts.Nonces, attest.PurposeDispatch)
			delete(tp.opts.Nonces, attest.PurposeComplete)
		}
		if mut != nil {
			mut(&tp.opts)
		}
		ev := evaluate(tp.policy, tp.inputs, tp.opts, teeNow)
		return ev, ev.Bundles[0]
	}
}

func vsaCases() []resultCase {
	return []resultCase{
		{"vsa-passed.json", verify.VSAPredicateType, snpEval(wholeBundle, true, nil), []string{"ATTESTD_BUILDENV_LEVEL_3"}},
		{"vsa-passed-level0.json", verify.VSAPredicateType, snpEval(wholeBundle, false, nil), []string{"ATTESTD_BUILDENV_LEVEL_0"}},
		{"vsa-failed.json", verify.VSAPredicateType, snpEval(wholeBundle, true, func(o *verify.Options) { o.BuildID = "another-build" }), []string{"FAILED"}},
	}
}

func TestVSAGolden(t *testing.T) { runResultCases(t, vsaCases()) }

func runResultCases(t *testing.T, cases []resultCase) {
	f := getFixtures(t)
	for _, c := range cases {
		t.Run(strings.TrimSuffix(c.golden, ".json"), func(t *testing.T) {
			ev, b := c.eval(t, f)
			typ, st, err := verify.ResultStatement(ev, b, resultOpts)
			if err != nil {
				t.Fatal(err)
			}
			if typ != c.predicateType {
				t.Fatalf("predicate type %s, want %s", typ, c.predicateType)
			}
			if got := resultValues(t, st); !slices.Equal(got, c.want) {
				t.Errorf("levels/properties %q, want %q (failed: %v)", got, c.want, failedChecks(ev))
			}
			checkGolden(t, c.golden, normalizeResult(t, st, ev, b))
		})
	}
}

// resultValues strictly decodes a VSA or SVR statement and returns its
// verifiedLevels or properties.
func resultValues(t *testing.T, st []byte) []string {
	t.Helper()
	s, pred := strictStatement(t, st)
	switch s.GetPredicateType() {
	case verify.VSAPredicateType:
		return strictVSA(t, pred).GetVerifiedLevels()
	case verify.SVRPredicateType:
		return strictSVR(t, pred).Properties
	}
	t.Fatalf("predicate type %q", s.GetPredicateType())
	return nil
}

// strictStatement decodes a statement with the in-toto binding, unknown
// fields rejected, validates it and returns its predicate as JSON.
func strictStatement(t *testing.T, st []byte) (*ita.Statement, []byte) {
	t.Helper()
	s := &ita.Statement{}
	if err := protojson.Unmarshal(st, s); err != nil {
		t.Fatalf("strict statement decoding: %v\n%s", err, st)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("statement: %v", err)
	}
	pred, err := protojson.Marshal(s.GetPredicate())
	if err != nil {
		t.Fatal(err)
	}
	return s, pred
}

// strictVSA decodes a VSA predicate with the in-toto binding, unknown
// fields rejected, and checks the VSA v1 rules.
func strictVSA(t *testing.T, pred []byte) *vsapb.VerificationSummary {
	t.Helper()
	v := &vsapb.VerificationSummary{}
	if err := protojson.Unmarshal(pred, v); err != nil {
		t.Fatalf("strict VSA decoding: %v\n%s", err, pred)
	}
	if err := verify.ValidateVSA(v); err != nil {
		t.Fatal(err)
	}
	return v
}

// strictSVR decodes an SVR v0.2 predicate strictly, and what the v0.1
// binding knows of it (all but verifier.policies) with that binding,
// unknown fields rejected.
func strictSVR(t *testing.T, pred []byte) *verify.SVR {
	t.Helper()
	s, err := verify.DecodeSVR(pred)
	if err != nil {
		t.Fatalf("%v\n%s", err, pred)
	}
	var m map[string]any
	if err := json.Unmarshal(pred, &m); err != nil {
		t.Fatal(err)
	}
	// The v0.1 binding has no verifier.policies: it rejects v0.2 strictly.
	if err := protojson.Unmarshal(pred, &svrpb.SimpleVerificationResult{}); err == nil {
		t.Error("the v0.1 binding decoded verifier.policies strictly: has it learned v0.2?")
	}
	delete(m["verifier"].(map[string]any), "policies")
	rest, _ := json.Marshal(m)
	v01 := &svrpb.SimpleVerificationResult{}
	if err := protojson.Unmarshal(rest, v01); err != nil {
		t.Fatalf("strict SVR v0.1 decoding of the fields v0.1 knows: %v\n%s", err, rest)
	}
	if v01.GetVerifier().GetId() != s.VerifierID || !v01.GetTimeCreated().AsTime().Equal(s.TimeCreated) || !slices.Equal(v01.GetProperties(), s.Properties) {
		t.Errorf("v0.1 binding reads %v, v0.2 %+v", v01, s)
	}
	return s
}

// normalizeResult replaces the run-specific digests by fixed ones and
// indents the statement.
func normalizeResult(t *testing.T, st []byte, ev *verify.Evaluation, b *verify.BundleEvaluation) []byte {
	t.Helper()
	out := string(st)
	for _, r := range b.Report.Results {
		if r.KeyDigest != "" {
			out = strings.ReplaceAll(out, r.KeyDigest, goldenEnvKey)
		}
	}
	out = strings.ReplaceAll(out, b.SHA256, goldenBundle)
	if ev.PolicySHA256 != "" {
		out = strings.ReplaceAll(out, ev.PolicySHA256, goldenPolicy)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, []byte(out), "", "  "); err != nil {
		t.Fatal(err)
	}
	buf.WriteByte('\n')
	return buf.Bytes()
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "results", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if d := cmp.Diff(string(want), string(got)); d != "" {
		t.Errorf("%s differs (-golden +got; run with -update to accept):\n%s", path, d)
	}
}

// TestResultSigned: a result signs as DSSE and verifies with the key.
func TestVSASigned(t *testing.T) {
	f := getFixtures(t)
	ev, b := snpEval(wholeBundle, true, nil)(t, f)
	_, st, err := verify.ResultStatement(ev, b, resultOpts)
	if err != nil {
		t.Fatal(err)
	}
	key := otherKey()
	signed, err := verify.SignResult(context.Background(), key, st)
	if err != nil {
		t.Fatal(err)
	}
	env, err := scai.ParseEnvelope(signed)
	if err != nil {
		t.Fatal(err)
	}
	if err := scai.VerifySignature(env, crypto.PublicKey(key.Public())); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	if !bytes.Equal(payload, st) || env.PayloadType != "application/vnd.in-toto+json" {
		t.Errorf("signed payload %s (%s), want the statement", payload, env.PayloadType)
	}
}

// TestVSAOptions: missing or non-URI options, and the wrong kind of
// bundle, are errors.
func TestVSAOptions(t *testing.T) {
	f := getFixtures(t)
	ev, b := snpEval(wholeBundle, true, nil)(t, f)
	admEv, adm := snpEval(iDispatch, true, nil)(t, f)
	mod := func(m func(o *verify.ResultOptions)) verify.ResultOptions {
		o := resultOpts
		m(&o)
		return o
	}
	for _, c := range []struct {
		name string
		make func() ([]byte, error)
		want error
	}{
		{"no-policy-uri", func() ([]byte, error) {
			return verify.NewVSA(ev, b, mod(func(o *verify.ResultOptions) { o.PolicyURI = "" }))
		}, verify.ErrResultOptions},
		{"bare-policy-file-name", func() ([]byte, error) {
			return verify.NewVSA(ev, b, mod(func(o *verify.ResultOptions) { o.PolicyURI = "policy.yaml" }))
		}, verify.ErrResultOptions},
		{"no-verifier-id", func() ([]byte, error) {
			return verify.NewVSA(ev, b, mod(func(o *verify.ResultOptions) { o.VerifierID = "" }))
		}, verify.ErrResultOptions},
		{"local-bundle-path", func() ([]byte, error) {
			return verify.NewVSA(ev, b, mod(func(o *verify.ResultOptions) { o.BundleURI = "/tmp/bundle.intoto.jsonl" }))
		}, verify.ErrResultOptions},
		{"input-without-digest", func() ([]byte, error) {
			return verify.NewVSA(ev, b, mod(func(o *verify.ResultOptions) {
				o.Inputs = []*ita.ResourceDescriptor{{Uri: "https://example.com/ref.json"}}
			}))
		}, verify.ErrResultOptions},
		{"svr-policy-uri", func() ([]byte, error) {
			return verify.NewSVR(admEv, adm, mod(func(o *verify.ResultOptions) { o.PolicyURI = "" }))
		}, verify.ErrResultOptions},
		{"vsa-of-admission", func() ([]byte, error) { return verify.NewVSA(admEv, adm, resultOpts) }, verify.ErrResultKind},
		{"svr-of-artifact", func() ([]byte, error) { return verify.NewSVR(ev, b, resultOpts) }, verify.ErrResultKind},
		{"nothing-opened", func() ([]byte, error) {
			return verify.NewVSA(ev, &verify.BundleEvaluation{Name: "x", Report: &verify.Report{}}, resultOpts)
		}, verify.ErrNoAttestation},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.make(); !errors.Is(err, c.want) {
				t.Errorf("err %v, want %v", err, c.want)
			}
		})
	}
	// Further inputs and a caller's resourceUri are written as given.
	ref := &ita.ResourceDescriptor{Uri: "https://example.com/reference.json", Digest: map[string]string{"sha256": strings.Repeat("d", 64)}}
	st, err := verify.NewVSA(ev, b, mod(func(o *verify.ResultOptions) {
		o.Inputs, o.ResourceURI, o.Version = []*ita.ResourceDescriptor{ref}, "pkg:generic/app@1.0", ""
	}))
	if err != nil {
		t.Fatal(err)
	}
	_, pred := strictStatement(t, st)
	v := strictVSA(t, pred)
	if len(v.GetInputAttestations()) != 2 || v.GetInputAttestations()[1].GetUri() != ref.Uri ||
		v.GetResourceUri() != "pkg:generic/app@1.0" || v.GetVerifier().GetId() != resultOpts.VerifierID {
		t.Errorf("VSA %s", pred)
	}
}

// TestValidateVSA: the VSA v1 rules the binding does not check.
func TestValidateVSA(t *testing.T) {
	good := func() *vsapb.VerificationSummary {
		return &vsapb.VerificationSummary{
			Verifier:           &vsapb.VerificationSummary_Verifier{Id: "https://example.com/v"},
			TimeVerified:       timestamppb.New(teeNow),
			ResourceUri:        "https://example.com/app",
			Policy:             &vsapb.VerificationSummary_Policy{Uri: "https://example.com/p"},
			InputAttestations:  []*vsapb.VerificationSummary_InputAttestation{{Digest: map[string]string{"sha256": goldenBundle}}},
			VerificationResult: verify.VSAPassed,
			VerifiedLevels:     []string{"SLSA_BUILD_LEVEL_2", verify.BuildEnvLevel(2), "ORG_REVIEWED"},
		}
	}
	if err := verify.ValidateVSA(good()); err != nil {
		t.Fatalf("good VSA: %v", err)
	}
	for name, mut := range map[string]func(p *vsapb.VerificationSummary){
		"no-verifier":          func(p *vsapb.VerificationSummary) { p.Verifier = nil },
		"no-time":              func(p *vsapb.VerificationSummary) { p.TimeVerified = nil },
		"no-resource":          func(p *vsapb.VerificationSummary) { p.ResourceUri = "" },
		"no-policy":            func(p *vsapb.VerificationSummary) { p.Policy = nil },
		"policy-without-uri":   func(p *vsapb.VerificationSummary) { p.Policy.Uri = "" },
		"input-without-digest": func(p *vsapb.VerificationSummary) { p.InputAttestations[0].Digest = nil },
		"input-bad-digest":     func(p *vsapb.VerificationSummary) { p.InputAttestations[0].Digest["sha256"] = "abc" },
		"no-levels":            func(p *vsapb.VerificationSummary) { p.VerifiedLevels = nil },
		"two-levels-one-track": func(p *vsapb.VerificationSummary) {
			p.VerifiedLevels = []string{verify.BuildEnvLevel(1), verify.BuildEnvLevel(2)}
		},
		"passed-with-failed": func(p *vsapb.VerificationSummary) { p.VerifiedLevels = []string{verify.VSAFailed} },
		"failed-with-levels": func(p *vsapb.VerificationSummary) { p.VerificationResult = verify.VSAFailed },
		"failed-no-levels": func(p *vsapb.VerificationSummary) {
			p.VerificationResult, p.VerifiedLevels = verify.VSAFailed, nil
		},
		"unknown-result": func(p *vsapb.VerificationSummary) { p.VerificationResult = "OK" },
	} {
		t.Run(name, func(t *testing.T) {
			p := good()
			mut(p)
			if err := verify.ValidateVSA(p); !errors.Is(err, verify.ErrInvalidVSA) {
				t.Errorf("err %v, want ErrInvalidVSA", err)
			}
		})
	}
}

// TestBuildEnvLevel: the one place the track's level names are made.
func TestBuildEnvLevel(t *testing.T) {
	if got := verify.BuildEnvLevel(3); got != "ATTESTD_BUILDENV_LEVEL_3" || strings.HasPrefix(got, "SLSA_") {
		t.Errorf("BuildEnvLevel(3) = %s", got)
	}
}

// docsSection is the section of docs/verifying.md that shows the results.
const docsSection = "## Verification results (VSA and SVR)"

// docsExample is an example of docs/verifying.md: a JSON block after an
// HTML comment naming its golden file.
var docsExample = regexp.MustCompile("(?s)<!-- golden: (testdata/results/[a-z0-9.-]+) -->\\s*```json\n(.*?)```")

// TestVSADocsExamples: each example in docs/verifying.md decodes strictly
// with the bindings, validates, and equals its golden file but for the
// time.
func TestVSADocsExamples(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "verifying.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(doc), docsSection+"\n")
	if !ok {
		t.Fatalf("docs/verifying.md has no %q", docsSection)
	}
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	seen := map[string]bool{}
	for _, m := range docsExample.FindAllStringSubmatch(sec, -1) {
		name, example := m[1], []byte(m[2])
		seen[filepath.Base(name)] = true
		t.Run(filepath.Base(name), func(t *testing.T) {
			resultValues(t, example)
			golden, err := os.ReadFile(filepath.FromSlash(name))
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(withoutTime(t, golden), withoutTime(t, example)); d != "" {
				t.Errorf("the docs' example differs from %s (-golden +docs):\n%s", name, d)
			}
		})
	}
	for _, want := range []string{"vsa-passed.json", "vsa-failed.json", "svr-admission.json"} {
		if !seen[want] {
			t.Errorf("docs/verifying.md shows no example of %s", want)
		}
	}
}

// withoutTime is a statement as generic JSON without the predicate's time.
func withoutTime(t *testing.T, st []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(st, &m); err != nil {
		t.Fatalf("%v\n%s", err, st)
	}
	if p, ok := m["predicate"].(map[string]any); ok {
		delete(p, "timeVerified")
		delete(p, "timeCreated")
	}
	return m
}
