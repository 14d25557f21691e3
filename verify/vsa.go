package verify

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	vsapb "github.com/in-toto/attestation/go/predicates/vsa/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// Verification results (docs/verifying.md, "Verification results (VSA and
// SVR)"): a bundle that holds a completion is about artifacts, the build's
// outputs, and gets a SLSA VSA v1; a bundle whose furthest step is a launch,
// an admission or a dispatch records a decision about an environment and
// gets an in-toto Simple Verification Result v0.2 (svr.go).

// VSAPredicateType is the SLSA Verification Summary Attestation v1 type.
const VSAPredicateType = "https://slsa.dev/verification_summary/v1"

// BuildEnvTrack prefixes the Build Environment track's level names. SLSA
// reserves values starting with SLSA_ for the tracks it publishes and the
// Build Environment track is still a draft, so attestd writes
// ATTESTD_BUILDENV_LEVEL_<n>. Once the track is published this becomes
// "SLSA_BUILDENV" and nothing else changes.
const BuildEnvTrack = "ATTESTD_BUILDENV"

// BuildEnvLevel is the level name of Build Environment level n, e.g.
// ATTESTD_BUILDENV_LEVEL_2. A level implies the levels below it.
func BuildEnvLevel(n int) string { return BuildEnvTrack + "_LEVEL_" + strconv.Itoa(n) }

// VSA verificationResult values; VSAFailed is also the verifiedLevels entry
// of a failed verification.
const (
	VSAPassed = "PASSED"
	VSAFailed = "FAILED"
)

// Errors of the result builders.
var (
	// ErrResultOptions: a required option is missing or not an absolute URI.
	ErrResultOptions = errors.New("verification result options")
	// ErrNoAttestation: the bundle holds no attestd attestation that opened, so
	// there is neither an env key nor an output to make a statement about.
	ErrNoAttestation = errors.New("the bundle holds no attestd attestation that opened")
	// ErrResultKind: NewVSA was given a bundle without a completion, or
	// NewSVR one with a completion (ResultStatement chooses for you).
	ErrResultKind = errors.New("wrong verification result kind for the bundle")
	// ErrInvalidVSA: a VSA predicate breaks a rule of SLSA VSA v1.
	ErrInvalidVSA = errors.New("invalid SLSA VSA v1 predicate")
)

// ResultOptions describe the verifier and what it verified against, for a
// VSA or an SVR. The URIs must be absolute (a scheme, e.g. https: or
// file:); a bare file name is not a URI.
type ResultOptions struct {
	// VerifierID is the verifier's identity (required), e.g.
	// https://attestd.dev/attestctl.
	VerifierID string
	// Version, when set, versions the identity: it is appended to
	// VerifierID as a last path segment (…/attestctl/v0.4.0), as the SVR
	// spec recommends. The bindings have no verifier.version field.
	Version string
	// PolicyURI is where the appraisal policy lives (required): written
	// with the evaluation's PolicySHA256 as VSA policy and SVR
	// verifier.policies.
	PolicyURI string
	// ResourceURI is the VSA's resourceUri. Empty: derived from the bundle,
	// attestd:env-key:sha256:<hex>;build-id=<escaped build ID>.
	ResourceURI string
	// BundleURI, when set, is where the bundle can be fetched: the uri of
	// its inputAttestations entry (the digest is always there).
	BundleURI string
	// Inputs are further attestations the verification used besides the
	// bundle (e.g. the signed reference values), each with a digest: VSA
	// inputAttestations must name all of them.
	Inputs []*ita.ResourceDescriptor
	// Time is the verification time (zero: now); written in whole seconds.
	Time time.Time
}

// ResultStatement returns the statement (in-toto Statement v1, JSON) that
// records the verification of bundle b of ev: a VSA when b holds a
// completion, else an SVR for the admission or dispatch decision. Sign it
// with SignResult.
func ResultStatement(ev *Evaluation, b *BundleEvaluation, o ResultOptions) (predicateType string, statement []byte, err error) {
	f, err := factsOf(b)
	if err != nil {
		return "", nil, err
	}
	if f.has[attest.PurposeComplete] {
		st, err := newVSA(ev, b, f, o)
		return VSAPredicateType, st, err
	}
	st, err := newSVR(ev, b, f, o)
	return SVRPredicateType, st, err
}

// SignResult signs a VSA or SVR statement: a DSSE envelope with payload
// type application/vnd.in-toto+json.
func SignResult(ctx context.Context, key crypto.Signer, statement []byte) ([]byte, error) {
	return scai.SignPayload(ctx, key, statement)
}

// NewVSA returns a SLSA VSA v1 statement (JSON) for bundle b of ev, which
// must hold a completion: the subjects are the build's outputs. The result
// is PASSED only when b and the whole evaluation passed; verifiedLevels then
// holds the one Build Environment level the evidence supports (level 0
// included), else FAILED.
func NewVSA(ev *Evaluation, b *BundleEvaluation, o ResultOptions) ([]byte, error) {
	f, err := factsOf(b)
	if err != nil {
		return nil, err
	}
	return newVSA(ev, b, f, o)
}

func newVSA(ev *Evaluation, b *BundleEvaluation, f *bundleFacts, o ResultOptions) ([]byte, error) {
	if !f.has[attest.PurposeComplete] {
		return nil, fmt.Errorf("vsa: %s: %w: no completion, so no artifact (use an SVR)", b.Name, ErrResultKind)
	}
	id, err := o.verifierID()
	if err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	if err := checkURI("policy URI", o.PolicyURI, true); err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	resource := o.ResourceURI
	if resource == "" {
		resource = f.resourceURI()
	} else if err := checkURI("resource URI", resource, true); err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	inputs, err := o.inputAttestations(b)
	if err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	result, levels := VSAFailed, []string{VSAFailed}
	if b.OK && ev.OK {
		result, levels = VSAPassed, []string{BuildEnvLevel(b.Level)}
	}
	pred := &vsapb.VerificationSummary{
		Verifier:           &vsapb.VerificationSummary_Verifier{Id: id},
		TimeVerified:       timestamppb.New(o.time()),
		ResourceUri:        resource,
		Policy:             &vsapb.VerificationSummary_Policy{Uri: o.PolicyURI, Digest: policyDigest(ev)},
		InputAttestations:  inputs,
		VerificationResult: result,
		VerifiedLevels:     levels,
	}
	if err := ValidateVSA(pred); err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	pj, err := protojson.Marshal(pred)
	if err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	st, err := statementJSON(f.outputs, VSAPredicateType, pj)
	if err != nil {
		return nil, fmt.Errorf("vsa: %w", err)
	}
	return st, nil
}

// levelName is one verifiedLevels entry: <TRACK>_LEVEL_<n>.
var levelName = regexp.MustCompile(`^([A-Z0-9_]+)_LEVEL_([0-9]+)$`)

// ValidateVSA checks the rules of SLSA VSA v1 (1.0 and 1.1) that a decoded
// predicate can break: the required fields (verifier.id, timeVerified,
// resourceUri, policy.uri, verificationResult, verifiedLevels), a digest in
// every inputAttestations entry, PASSED or FAILED, FAILED alone in
// verifiedLevels of a failure, and at most one level per track. The Go
// binding (in-toto/attestation v1.2.0) has no Validate of its own.
func ValidateVSA(p *vsapb.VerificationSummary) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidVSA, fmt.Sprintf(format, a...))
	}
	if p.GetVerifier().GetId() == "" {
		return bad("verifier.id is required")
	}
	if p.GetTimeVerified() == nil {
		return bad("timeVerified is required")
	}
	if err := p.GetTimeVerified().CheckValid(); err != nil {
		return bad("timeVerified: %v", err)
	}
	if p.GetResourceUri() == "" {
		return bad("resourceUri is required")
	}
	if p.GetPolicy().GetUri() == "" {
		return bad("policy.uri is required")
	}
	if err := (&ita.ResourceDescriptor{Uri: p.GetPolicy().GetUri(), Digest: p.GetPolicy().GetDigest()}).Validate(); err != nil {
		return bad("policy: %v", err)
	}
	for i, in := range p.GetInputAttestations() {
		if len(in.GetDigest()) == 0 {
			return bad("inputAttestations[%d] has no digest", i)
		}
		if err := (&ita.ResourceDescriptor{Uri: in.GetUri(), Digest: in.GetDigest()}).Validate(); err != nil {
			return bad("inputAttestations[%d]: %v", i, err)
		}
	}
	levels := p.GetVerifiedLevels()
	if len(levels) == 0 {
		return bad("verifiedLevels is required")
	}
	switch p.GetVerificationResult() {
	case VSAFailed:
		if len(levels) != 1 || levels[0] != VSAFailed {
			return bad("a FAILED verification has verifiedLevels [%q], not %q", VSAFailed, levels)
		}
		return nil
	case VSAPassed:
	default:
		return bad("verificationResult %q is neither %s nor %s", p.GetVerificationResult(), VSAPassed, VSAFailed)
	}
	tracks := map[string]bool{}
	for _, l := range levels {
		if l == VSAFailed {
			return bad("a PASSED verification lists %s in verifiedLevels", VSAFailed)
		}
		m := levelName.FindStringSubmatch(l)
		if m == nil {
			continue // a custom value that is not a track level
		}
		if tracks[m[1]] {
			return bad("verifiedLevels lists more than one %s level", m[1])
		}
		tracks[m[1]] = true
	}
	return nil
}

// bundleFacts is what a result says about a bundle, from its attestd
// attestations that opened.
type bundleFacts struct {
	keyDigest string
	buildID   string
	has       map[attest.Purpose]bool
	outputs   []*ita.ResourceDescriptor // the completion's outputs
}

func factsOf(b *BundleEvaluation) (*bundleFacts, error) {
	f := &bundleFacts{has: map[attest.Purpose]bool{}}
	for _, r := range attestdResults(b.Report) {
		f.has[r.Purpose] = true
		if f.keyDigest == "" {
			f.keyDigest = r.KeyDigest
		}
		if r.BuildID != "" && f.buildID == "" {
			f.buildID = r.BuildID
		}
		if r.Purpose == attest.PurposeComplete && r.att.Build != nil && f.outputs == nil {
			f.outputs = cloneOutputs(r.att.Build.Outputs)
		}
	}
	if f.keyDigest == "" {
		return nil, fmt.Errorf("%s: %w", b.Name, ErrNoAttestation)
	}
	return f, nil
}

// envKeySubject is the environment as a statement subject, as attestd's own
// attestations name it.
func (f *bundleFacts) envKeySubject() []*ita.ResourceDescriptor {
	return []*ita.ResourceDescriptor{{Name: scai.SubjectName, Digest: map[string]string{"sha256": f.keyDigest}}}
}

// resourceURI is the default VSA resourceUri: the environment and the
// build the outputs came from.
func (f *bundleFacts) resourceURI() string {
	s := "attestd:env-key:sha256:" + f.keyDigest
	if f.buildID != "" {
		s += ";build-id=" + url.PathEscape(f.buildID)
	}
	return s
}

func (o *ResultOptions) verifierID() (string, error) {
	if err := checkURI("verifier ID", o.VerifierID, true); err != nil {
		return "", err
	}
	if o.Version == "" {
		return o.VerifierID, nil
	}
	return strings.TrimSuffix(o.VerifierID, "/") + "/" + url.PathEscape(o.Version), nil
}

func (o *ResultOptions) time() time.Time {
	t := o.Time
	if t.IsZero() {
		t = time.Now()
	}
	return t.UTC().Truncate(time.Second)
}

func (o *ResultOptions) inputAttestations(b *BundleEvaluation) ([]*vsapb.VerificationSummary_InputAttestation, error) {
	if err := checkURI("bundle URI", o.BundleURI, false); err != nil {
		return nil, err
	}
	out := []*vsapb.VerificationSummary_InputAttestation{{Uri: o.BundleURI, Digest: map[string]string{"sha256": b.SHA256}}}
	for i, in := range o.Inputs {
		if len(in.GetDigest()) == 0 {
			return nil, fmt.Errorf("%w: inputs[%d] has no digest", ErrResultOptions, i)
		}
		if err := checkURI(fmt.Sprintf("inputs[%d] URI", i), in.GetUri(), false); err != nil {
			return nil, err
		}
		out = append(out, &vsapb.VerificationSummary_InputAttestation{Uri: in.GetUri(), Digest: in.GetDigest()})
	}
	return out, nil
}

// policyDigest is the evaluation's policy digest set (nil when unknown).
func policyDigest(ev *Evaluation) map[string]string {
	if ev.PolicySHA256 == "" {
		return nil
	}
	return map[string]string{"sha256": ev.PolicySHA256}
}

// checkURI: s is an absolute URI (a scheme and something after it), or
// empty when not required.
func checkURI(what, s string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%w: the %s is required", ErrResultOptions, what)
		}
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque == "" && u.Host == "" && u.Path == "" || strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("%w: the %s %q is not an absolute URI (e.g. https://… or file:///…)", ErrResultOptions, what, s)
	}
	return nil
}

// statementJSON wraps predicate (JSON) in an in-toto Statement v1, checks
// it with the binding's Validate and returns compact JSON with sorted keys:
// the exact bytes to sign.
func statementJSON(subject []*ita.ResourceDescriptor, predicateType string, predicate []byte) ([]byte, error) {
	ps := &structpb.Struct{}
	if err := protojson.Unmarshal(predicate, ps); err != nil {
		return nil, err
	}
	st := &ita.Statement{Type: ita.StatementTypeUri, Subject: subject, PredicateType: predicateType, Predicate: ps}
	if err := st.Validate(); err != nil {
		return nil, err
	}
	out, err := protojson.Marshal(st)
	if err != nil {
		return nil, err
	}
	// protojson's whitespace is deliberately unstable: re-encode.
	var generic any
	if err := json.Unmarshal(out, &generic); err != nil {
		return nil, err
	}
	return json.Marshal(generic)
}

func cloneOutputs(in []*ita.ResourceDescriptor) []*ita.ResourceDescriptor {
	out := make([]*ita.ResourceDescriptor, 0, len(in))
	for _, rd := range in {
		out = append(out, &ita.ResourceDescriptor{Name: rd.GetName(), Uri: rd.GetUri(), Digest: rd.GetDigest()})
	}
	return out
}
