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
	"time"
	"unicode/utf8"

	"github.com/attestd/attestd/attest"
	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
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
// Statement.Validate. To sign, Encode and SignPayload do less work than
// NewStatement and Sign, and give the same payload bytes.
func NewStatement(a *Attestation) (*ita.Statement, error) {
	p, err := prepare(a)
	if err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	subject := p.subject
	if a.Purpose == attest.PurposeComplete {
		subject = make([]*ita.ResourceDescriptor, len(p.subject))
		for i, rd := range p.subject {
			subject[i] = cloneDescriptor(rd)
		}
	}
	st := &ita.Statement{
		Type:          ita.StatementTypeUri,
		Subject:       subject,
		PredicateType: PredicateType,
		Predicate:     reportStruct(p.report),
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	return st, nil
}

// Encode returns the statement for a as the JSON payload to sign (with
// SignPayload): the bytes Sign(NewStatement(a)) would sign, written
// directly. They decode with the bindings (protojson) to a Statement that
// passes Validate, whose predicate is a SCAI AttributeReport that passes
// Validate.
func Encode(a *Attestation) ([]byte, error) {
	p, err := prepare(a)
	if err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	b, err := p.encode()
	if err != nil {
		return nil, fmt.Errorf("build statement: %w", err)
	}
	return b, nil
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

// buildCanon is a checked build's descriptors in canonical JSON, and the
// digest bound to them.
type buildCanon struct {
	cond   string     // condReqDig or condIODig; "" without a build
	lists  [][][]byte // request, or inputs and outputs
	digest [32]byte
}

// all returns the canonical descriptors in attribute order.
func (bc buildCanon) all() [][]byte {
	var out [][]byte
	for _, l := range bc.lists {
		out = append(out, l...)
	}
	return out
}

// checkBuild checks the build fits the purpose: none for launch and attest;
// an ID and request for dispatch; an ID, inputs and at least one output,
// all with digests, for complete. It returns the descriptors' canonical
// JSON and their digest.
func checkBuild(p attest.Purpose, b *Build) (buildCanon, error) {
	switch p {
	case attest.PurposeLaunch, attest.PurposeAttest:
		if b != nil {
			return buildCanon{}, fmt.Errorf("purpose %q carries no build", p)
		}
		return buildCanon{}, nil
	}
	if b == nil {
		return buildCanon{}, fmt.Errorf("purpose %q needs a build", p)
	}
	if err := attest.CheckBuildID(b.ID); err != nil {
		return buildCanon{}, err
	}
	if p == attest.PurposeDispatch {
		if len(b.Inputs)+len(b.Outputs) > 0 {
			return buildCanon{}, fmt.Errorf("%w: a dispatch carries no inputs or outputs", ErrDescriptor)
		}
		req, err := checkDescriptors("request", b.Request, false)
		if err != nil {
			return buildCanon{}, err
		}
		return buildCanon{cond: condReqDig, lists: [][][]byte{req}, digest: digestCanon(labelRequest, req)}, nil
	}
	if len(b.Request) > 0 {
		return buildCanon{}, fmt.Errorf("%w: a completion carries no request", ErrDescriptor)
	}
	in, out, err := checkIO(b.Inputs, b.Outputs)
	if err != nil {
		return buildCanon{}, err
	}
	return buildCanon{cond: condIODig, lists: [][][]byte{in, out}, digest: digestCanon(labelIO, in, out)}, nil
}

// appendBuildAttributes appends one attribute per build descriptor (the
// caller's descriptors, not copies: the report never leaves this package).
func appendBuildAttributes(attrs []*scaipb.AttributeAssertion, b *Build) []*scaipb.AttributeAssertion {
	if b == nil {
		return attrs
	}
	for _, l := range []struct {
		name string
		rds  []*ita.ResourceDescriptor
	}{{AttrBuildRequest, b.Request}, {AttrBuildInput, b.Inputs}, {AttrBuildOutput, b.Outputs}} {
		for _, rd := range l.rds {
			attrs = append(attrs, &scaipb.AttributeAssertion{Attribute: l.name, Target: rd})
		}
	}
	return attrs
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
	ann := map[string]*structpb.Value{}
	if p.Version != "" {
		ann[annVersion] = structpb.NewStringValue(p.Version)
	}
	if !t.IsZero() {
		ann[annIssuedAt] = structpb.NewStringValue(t.UTC().Format(time.RFC3339Nano))
	}
	if len(ann) > 0 {
		rd.Annotations = &structpb.Struct{Fields: ann}
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
