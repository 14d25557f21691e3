package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/attest"
)

// SVRPredicateType is in-toto's Simple Verification Result, version 0.2.
// The in-toto Go binding (v1.2.0) only has v0.1, whose verifier has no
// policies: attestd writes v0.2 with the SVR type below (docs/verifying.md).
const SVRPredicateType = "https://in-toto.io/attestation/svr/v0.2"

// SVR properties attestd asserts. Only passed properties are listed; a
// failed decision has none. The level, BuildEnvLevel(n) for n ≥ 1, is
// listed too when the evidence supports one.
const (
	// PropertyAdmitted: the bundle holds a launch or admission attestation
	// and everything in it verified under the policy.
	PropertyAdmitted = "ATTESTD_ADMITTED"
	// PropertyDispatchedTo, followed by the build ID, e.g.
	// ATTESTD_DISPATCHED_TO_BUILD:build-1: the environment was dispatched
	// to that build (a verified dispatch attestation).
	PropertyDispatchedTo = "ATTESTD_DISPATCHED_TO_BUILD:"
)

// ErrInvalidSVR: a predicate is not a valid SVR v0.2.
var ErrInvalidSVR = errors.New("invalid in-toto SVR v0.2 predicate")

// SVR is a Simple Verification Result v0.2 predicate:
//
//	{"verifier": {"id": URI, "policies": [ResourceDescriptor…]},
//	 "timeCreated": Timestamp, "properties": [string…]}
//
// every field required; policies and properties may be empty arrays.
type SVR struct {
	VerifierID  string
	Policies    []*ita.ResourceDescriptor
	TimeCreated time.Time
	Properties  []string
}

// svrWire is the JSON form; pointers tell a missing field from an empty one.
type svrWire struct {
	Verifier *struct {
		ID       *string            `json:"id"`
		Policies *[]json.RawMessage `json:"policies"`
	} `json:"verifier"`
	TimeCreated *string   `json:"timeCreated"`
	Properties  *[]string `json:"properties"`
}

// MarshalJSON encodes the predicate; policies are resource descriptors in
// their protojson form.
func (s SVR) MarshalJSON() ([]byte, error) {
	policies := make([]json.RawMessage, 0, len(s.Policies))
	for _, p := range s.Policies {
		b, err := protojson.Marshal(p)
		if err != nil {
			return nil, err
		}
		policies = append(policies, b)
	}
	props := s.Properties
	if props == nil {
		props = []string{}
	}
	return json.Marshal(map[string]any{
		"verifier":    map[string]any{"id": s.VerifierID, "policies": policies},
		"timeCreated": s.TimeCreated.UTC().Format(time.RFC3339Nano),
		"properties":  props,
	})
}

// UnmarshalJSON decodes strictly: unknown fields, missing required fields
// and policies that are not resource descriptors are errors.
func (s *SVR) UnmarshalJSON(b []byte) error {
	var w svrWire
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&w); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSVR, err)
	}
	if d.More() {
		return fmt.Errorf("%w: data after the predicate", ErrInvalidSVR)
	}
	switch {
	case w.Verifier == nil:
		return fmt.Errorf("%w: verifier is required", ErrInvalidSVR)
	case w.Verifier.ID == nil:
		return fmt.Errorf("%w: verifier.id is required", ErrInvalidSVR)
	case w.Verifier.Policies == nil:
		return fmt.Errorf("%w: verifier.policies is required (an empty array when there are none)", ErrInvalidSVR)
	case w.TimeCreated == nil:
		return fmt.Errorf("%w: timeCreated is required", ErrInvalidSVR)
	case w.Properties == nil:
		return fmt.Errorf("%w: properties is required (an empty array when none passed)", ErrInvalidSVR)
	}
	t, err := time.Parse(time.RFC3339Nano, *w.TimeCreated)
	if err != nil {
		return fmt.Errorf("%w: timeCreated: %v", ErrInvalidSVR, err)
	}
	out := SVR{VerifierID: *w.Verifier.ID, TimeCreated: t, Properties: *w.Properties, Policies: []*ita.ResourceDescriptor{}}
	for i, raw := range *w.Verifier.Policies {
		rd := &ita.ResourceDescriptor{}
		if err := protojson.Unmarshal(raw, rd); err != nil {
			return fmt.Errorf("%w: verifier.policies[%d]: %v", ErrInvalidSVR, i, err)
		}
		out.Policies = append(out.Policies, rd)
	}
	*s = out
	return nil
}

// Validate checks what SVR v0.2 requires: a verifier id that is a URI, a
// policies array (possibly empty) of valid resource descriptors, a time,
// and a properties array (possibly empty) of non-empty strings.
func (s *SVR) Validate() error {
	if err := checkURI("verifier.id", s.VerifierID, true); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidSVR, err)
	}
	if s.Policies == nil {
		return fmt.Errorf("%w: verifier.policies is required (an empty array when there are none)", ErrInvalidSVR)
	}
	for i, p := range s.Policies {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: verifier.policies[%d]: %v", ErrInvalidSVR, i, err)
		}
	}
	if s.TimeCreated.IsZero() {
		return fmt.Errorf("%w: timeCreated is required", ErrInvalidSVR)
	}
	if s.Properties == nil {
		return fmt.Errorf("%w: properties is required (an empty array when none passed)", ErrInvalidSVR)
	}
	for i, p := range s.Properties {
		if p == "" {
			return fmt.Errorf("%w: properties[%d] is empty", ErrInvalidSVR, i)
		}
	}
	return nil
}

// DecodeSVR decodes an SVR v0.2 predicate strictly and validates it.
func DecodeSVR(predicate []byte) (*SVR, error) {
	s := &SVR{}
	if err := s.UnmarshalJSON(predicate); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// NewSVR returns an SVR v0.2 statement (JSON) recording the admission or
// dispatch decision on bundle b of ev, which must not hold a completion
// (that is an artifact: NewVSA). The subject is the environment key. The
// properties are those that passed: none unless b and the whole evaluation
// passed, so a consumer must look for the property it needs, never act on
// an SVR's mere presence.
func NewSVR(ev *Evaluation, b *BundleEvaluation, o ResultOptions) ([]byte, error) {
	f, err := factsOf(b)
	if err != nil {
		return nil, err
	}
	return newSVR(ev, b, f, o)
}

func newSVR(ev *Evaluation, b *BundleEvaluation, f *bundleFacts, o ResultOptions) ([]byte, error) {
	if f.has[attest.PurposeComplete] {
		return nil, fmt.Errorf("svr: %s: %w: it holds a completion (use a VSA)", b.Name, ErrResultKind)
	}
	id, err := o.verifierID()
	if err != nil {
		return nil, fmt.Errorf("svr: %w", err)
	}
	if err := checkURI("policy URI", o.PolicyURI, true); err != nil {
		return nil, fmt.Errorf("svr: %w", err)
	}
	s := &SVR{
		VerifierID:  id,
		Policies:    []*ita.ResourceDescriptor{{Uri: o.PolicyURI, Digest: policyDigest(ev)}},
		TimeCreated: o.time(),
		Properties:  []string{},
	}
	if b.OK && ev.OK {
		if f.has[attest.PurposeLaunch] || f.has[attest.PurposeAttest] {
			s.Properties = append(s.Properties, PropertyAdmitted)
		}
		if f.has[attest.PurposeDispatch] && f.buildID != "" {
			s.Properties = append(s.Properties, PropertyDispatchedTo+f.buildID)
		}
		if b.Level > 0 {
			s.Properties = append(s.Properties, BuildEnvLevel(b.Level))
		}
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("svr: %w", err)
	}
	pj, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("svr: %w", err)
	}
	st, err := statementJSON(f.envKeySubject(), SVRPredicateType, pj)
	if err != nil {
		return nil, fmt.Errorf("svr: %w", err)
	}
	return st, nil
}
