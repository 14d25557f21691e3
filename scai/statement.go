// Package scai builds, signs (DSSE) and parses the in-toto Statements with
// SCAI predicates that attestd issues: each one says which environment key it
// is about, for what purpose, and carries the hardware evidence vouching for
// that key. The layout is documented in docs/formats.md.
//
// Parsing (Open) and signature checking (VerifySignature) are separate: Open
// never checks a signature, and neither checks the evidence itself — that is
// the backends' and the verify package's job.
package scai

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/attestd/attestd/attest"
	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// PayloadType is the DSSE payload type of every attestd envelope.
const PayloadType = "application/vnd.in-toto+json"

// PredicateType is the SCAI v0.3 predicate type,
// https://in-toto.io/attestation/scai/v0.3.
const PredicateType = scaipb.PredicateTypeUri + scaipb.PredicateVersion

// Names used in the statement; see docs/formats.md.
const (
	// SubjectName is the name of the statement's only subject, the
	// environment key.
	SubjectName = "env-key"
	// MediaTypeSPKI is the media type of a PKIX SubjectPublicKeyInfo DER.
	MediaTypeSPKI = "application/pkix-spki"

	// AttrPurposePrefix + purpose names the attribute asserting what the
	// statement is for, e.g. "attestd.dev/purpose/attest".
	AttrPurposePrefix = "attestd.dev/purpose/"
	// AttrEnvKey names the attribute whose target is the environment key.
	AttrEnvKey = "attestd.dev/env-key"
	// AttrEvidencePrefix + backend names the attribute carrying one part of
	// a backend's evidence, e.g. "attestd.dev/evidence/tpm".
	AttrEvidencePrefix = "attestd.dev/evidence/"
	// AttrAgent names the attribute carrying one agent-level part, e.g. the
	// agent's event log.
	AttrAgent = "attestd.dev/agent"

	// PartAgentCEL names the agent's TCG Canonical Event Log part.
	PartAgentCEL = "attestd/cel"
	// MediaTypeCEL is the media type of a CEL in its TLV encoding.
	MediaTypeCEL = "application/vnd.tcg.cel+tlv"
)

// Keys of conditions and annotations.
const (
	condPurpose  = "purpose"
	condBinding  = "binding"
	condNonce    = "nonce"
	condBuildID  = "buildId"
	condReqDig   = "requestDigest"
	condIODig    = "ioDigest"
	condRoot     = "batchRoot"
	condSize     = "batchSize"
	annSize      = "size"
	annBackend   = "backend"
	annVersion   = "version"
	annIssuedAt  = "issuedAt"
	digestSHA256 = string(ita.AlgorithmSHA256)
)

// backendName is the syntax of Evidence.Backend.
var backendName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,31}$`)

// Attestation is what one attestd attestation asserts.
type Attestation struct {
	// Purpose is launch, attest, dispatch or complete.
	Purpose attest.Purpose
	// Nonce is the verifier nonce for PurposeAttest, else nil.
	Nonce []byte
	// Binding is what the evidence's qualifying data / report data must
	// equal (attest.Bind).
	Binding attest.Binding
	// EnvKey is the environment public key (ECDSA P-256, or RSA ≥ 2048).
	EnvKey crypto.PublicKey
	// Evidence holds one entry per backend, each with at least one part.
	Evidence []*attest.Evidence
	// Build is the build a dispatch or completion attestation is bound to;
	// nil for launch and attest.
	Build *Build
	// Log names the prefix of the agent's event log this attestation covers
	// (required: every attestation replays a log to its register).
	Log LogRef
	// Batch is set on an admission (attest) attestation that answers several
	// callers with one quote; Nonce is then nil and each caller holds an
	// InclusionProof of its own nonce.
	Batch *Batch
	// Producer identifies the software that made the statement.
	Producer Producer
	// Time is when the statement was made; informational only (not
	// authenticated by any hardware). Zero means absent.
	Time time.Time
}

// Producer identifies the software that made a statement.
type Producer struct {
	Name    string // required, e.g. "attestd"
	Version string // optional
	URI     string // optional
}

// NewStatement builds the in-toto Statement for a. The result always passes
// Statement.Validate.
func NewStatement(a *Attestation) (*ita.Statement, error) {
	if a == nil {
		return nil, fmt.Errorf("build statement: nil attestation")
	}
	if err := checkPurpose(a.Purpose, a.Nonce, a.Batch); err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	der, kd, err := encodeKey(a.EnvKey)
	if err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	if err := checkBuild(a.Purpose, a.Build); err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	if want, err := ExpectedBinding(a); err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	} else if want != a.Binding {
		return nil, fmt.Errorf("build statement: %w: binding is not attest.Bind(purpose, key digest, binding data)", ErrBinding)
	}
	if a.Producer.Name == "" {
		return nil, fmt.Errorf("build statement: producer name is empty")
	}
	kdHex := hex.EncodeToString(kd[:])

	conds := map[string]any{
		condPurpose: string(a.Purpose),
		condBinding: hex.EncodeToString(a.Binding[:]),
	}
	if a.Nonce != nil {
		conds[condNonce] = hex.EncodeToString(a.Nonce)
	}
	if a.Batch != nil {
		conds[condRoot] = hex.EncodeToString(a.Batch.Root[:])
		conds[condSize] = strconv.Itoa(a.Batch.Size)
	}
	if a.Build != nil {
		conds[condBuildID] = a.Build.ID
		name, d, err := buildDigest(a.Purpose, a.Build)
		if err != nil {
			return nil, fmt.Errorf("build statement: %w", err)
		}
		conds[name] = hex.EncodeToString(d[:])
	}
	condStruct, err := structpb.NewStruct(conds)
	if err != nil {
		return nil, fmt.Errorf("build statement: conditions: %w", err)
	}
	attrs := []*scaipb.AttributeAssertion{
		{Attribute: AttrPurposePrefix + string(a.Purpose), Conditions: condStruct},
		{Attribute: AttrEnvKey, Target: &ita.ResourceDescriptor{
			Name:      SubjectName,
			Digest:    map[string]string{digestSHA256: kdHex},
			Content:   der,
			MediaType: MediaTypeSPKI,
		}},
	}
	attrs = append(attrs, buildAttributes(a.Build)...)

	seen := map[string]bool{}
	for i, ev := range a.Evidence {
		if ev == nil {
			return nil, fmt.Errorf("build statement: evidence %d is nil", i)
		}
		if !backendName.MatchString(ev.Backend) {
			return nil, fmt.Errorf("build statement: evidence %d: bad backend name %q", i, ev.Backend)
		}
		if seen[ev.Backend] {
			return nil, fmt.Errorf("build statement: two evidences from backend %q", ev.Backend)
		}
		seen[ev.Backend] = true
		if len(ev.Parts) == 0 {
			return nil, fmt.Errorf("build statement: evidence from %q has no parts", ev.Backend)
		}
		ann, err := structpb.NewStruct(map[string]any{annBackend: ev.Backend})
		if err != nil {
			return nil, fmt.Errorf("build statement: annotations: %w", err)
		}
		if err := checkParts(ev.Parts); err != nil {
			return nil, fmt.Errorf("build statement: evidence from %q: %w", ev.Backend, err)
		}
		for _, p := range ev.Parts {
			rd := partDescriptor(p)
			rd.Annotations = ann
			attrs = append(attrs, &scaipb.AttributeAssertion{Attribute: AttrEvidencePrefix + ev.Backend, Evidence: rd})
		}
	}
	if a.Log.Size <= 0 {
		return nil, fmt.Errorf("build statement: no event log reference")
	}
	logAnn, err := structpb.NewStruct(map[string]any{annSize: sizeString(a.Log.Size)})
	if err != nil {
		return nil, fmt.Errorf("build statement: annotations: %w", err)
	}
	attrs = append(attrs, &scaipb.AttributeAssertion{Attribute: AttrAgent, Evidence: &ita.ResourceDescriptor{
		Name:        PartAgentCEL,
		Digest:      map[string]string{digestSHA256: hex.EncodeToString(a.Log.SHA256[:])},
		MediaType:   MediaTypeCEL,
		Annotations: logAnn,
	}})

	producer, err := producerDescriptor(a.Producer, a.Time)
	if err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	report := &scaipb.AttributeReport{Attributes: attrs, Producer: producer}
	if err := report.Validate(); err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	pred, err := toStruct(report)
	if err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	subject := []*ita.ResourceDescriptor{{
		Name:   SubjectName,
		Digest: map[string]string{digestSHA256: kdHex},
	}}
	if a.Purpose == attest.PurposeComplete {
		subject = cloneDescriptors(a.Build.Outputs)
	}
	st := &ita.Statement{
		Type:          ita.StatementTypeUri,
		Subject:       subject,
		PredicateType: PredicateType,
		Predicate:     pred,
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	return st, nil
}

// checkPurpose checks purpose is known and the nonce fits it: required for
// PurposeAttest (unless batched: then absent, and the batch 2 to
// attest.MaxBatch leaves), optional for dispatch and complete, absent for
// launch.
func checkPurpose(p attest.Purpose, nonce []byte, batch *Batch) error {
	if batch != nil {
		switch {
		case p != attest.PurposeAttest:
			return fmt.Errorf("purpose %q is never batched", p)
		case nonce != nil:
			return fmt.Errorf("a batched attestation carries no nonce (each caller holds an inclusion proof)")
		case batch.Size < 2 || batch.Size > attest.MaxBatch:
			return fmt.Errorf("batch of %d, want 2 to %d", batch.Size, attest.MaxBatch)
		}
		return nil
	}
	switch p {
	case attest.PurposeAttest:
		return attest.CheckNonce(nonce)
	case attest.PurposeDispatch, attest.PurposeComplete:
		if nonce != nil {
			return attest.CheckNonce(nonce)
		}
		return nil
	case attest.PurposeLaunch:
		if nonce != nil {
			return fmt.Errorf("purpose %q takes no nonce", p)
		}
		return nil
	default:
		return fmt.Errorf("unknown purpose %q", p)
	}
}

// checkBuild checks the build fits the purpose: none for launch and attest;
// an ID and request for dispatch; an ID, inputs and at least one output,
// all with digests, for complete.
func checkBuild(p attest.Purpose, b *Build) error {
	switch p {
	case attest.PurposeLaunch, attest.PurposeAttest:
		if b != nil {
			return fmt.Errorf("purpose %q carries no build", p)
		}
		return nil
	}
	if b == nil {
		return fmt.Errorf("purpose %q needs a build", p)
	}
	if err := attest.CheckBuildID(b.ID); err != nil {
		return err
	}
	if p == attest.PurposeDispatch {
		if len(b.Inputs)+len(b.Outputs) > 0 {
			return fmt.Errorf("%w: a dispatch carries no inputs or outputs", ErrDescriptor)
		}
		return CheckDescriptors("request", b.Request, false)
	}
	if len(b.Request) > 0 {
		return fmt.Errorf("%w: a completion carries no request", ErrDescriptor)
	}
	if len(b.Outputs) == 0 {
		return fmt.Errorf("%w: a completion needs at least one output", ErrDescriptor)
	}
	if err := CheckDescriptors("input", b.Inputs, true); err != nil {
		return err
	}
	return CheckDescriptors("output", b.Outputs, true)
}

// buildDigest returns the condition name and value of the build's digest.
func buildDigest(p attest.Purpose, b *Build) (string, [32]byte, error) {
	if p == attest.PurposeDispatch {
		d, err := RequestDigest(b.Request)
		return condReqDig, d, err
	}
	d, err := IODigest(b.Inputs, b.Outputs)
	return condIODig, d, err
}

func buildAttributes(b *Build) []*scaipb.AttributeAssertion {
	if b == nil {
		return nil
	}
	var out []*scaipb.AttributeAssertion
	for _, l := range []struct {
		name string
		rds  []*ita.ResourceDescriptor
	}{{AttrBuildRequest, b.Request}, {AttrBuildInput, b.Inputs}, {AttrBuildOutput, b.Outputs}} {
		for _, rd := range l.rds {
			out = append(out, &scaipb.AttributeAssertion{Attribute: l.name, Target: proto.Clone(rd).(*ita.ResourceDescriptor)})
		}
	}
	return out
}

func cloneDescriptors(in []*ita.ResourceDescriptor) []*ita.ResourceDescriptor {
	out := make([]*ita.ResourceDescriptor, len(in))
	for i, rd := range in {
		out[i] = proto.Clone(rd).(*ita.ResourceDescriptor)
	}
	return out
}

// checkParts checks part names are non-empty, valid UTF-8 and unique.
func checkParts(parts []attest.Part) error {
	names := map[string]bool{}
	for i, p := range parts {
		if p.Name == "" || !utf8.ValidString(p.Name) || !utf8.ValidString(p.MediaType) {
			return fmt.Errorf("part %d: name and media type must be valid UTF-8, name non-empty", i)
		}
		if names[p.Name] {
			return fmt.Errorf("duplicate part %q", p.Name)
		}
		names[p.Name] = true
	}
	return nil
}

func partDescriptor(p attest.Part) *ita.ResourceDescriptor {
	d := sha256.Sum256(p.Data)
	return &ita.ResourceDescriptor{
		Name:      p.Name,
		Digest:    map[string]string{digestSHA256: hex.EncodeToString(d[:])},
		Content:   p.Data,
		MediaType: p.MediaType,
	}
}

func producerDescriptor(p Producer, t time.Time) (*ita.ResourceDescriptor, error) {
	if !utf8.ValidString(p.Name) || !utf8.ValidString(p.Version) || !utf8.ValidString(p.URI) {
		return nil, fmt.Errorf("producer fields must be valid UTF-8")
	}
	rd := &ita.ResourceDescriptor{Name: p.Name, Uri: p.URI}
	ann := map[string]any{}
	if p.Version != "" {
		ann[annVersion] = p.Version
	}
	if !t.IsZero() {
		ann[annIssuedAt] = t.UTC().Format(time.RFC3339Nano)
	}
	if len(ann) > 0 {
		s, err := structpb.NewStruct(ann)
		if err != nil {
			return nil, fmt.Errorf("producer annotations: %w", err)
		}
		rd.Annotations = s
	}
	return rd, nil
}

// encodeKey returns the PKIX DER of a supported environment key and its
// attest.KeyDigest.
func encodeKey(pub crypto.PublicKey) ([]byte, [32]byte, error) {
	if err := checkKeyType(pub); err != nil {
		return nil, [32]byte{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, [32]byte{}, fmt.Errorf("%w: %v", ErrEnvKey, err)
	}
	return der, sha256.Sum256(der), nil
}

// checkKeyType accepts ECDSA P-256 and RSA keys of at least 2048 bits.
func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ECDSA key must be on P-256", ErrEnvKey)
		}
	case *rsa.PublicKey:
		if k.N == nil || k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA key must have at least 2048 bits", ErrEnvKey)
		}
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrEnvKey, pub)
	}
	return nil
}

// toStruct converts the SCAI report into the Statement's predicate.
func toStruct(r *scaipb.AttributeReport) (*structpb.Struct, error) {
	b, err := protojson.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshal predicate: %w", err)
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("convert predicate: %w", err)
	}
	return s, nil
}
