package verify

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/scai"
)

// Image provenance: the SLSA provenance v1 statement an image bake writes
// about its artifacts, signed with the bake key (SLSA BuildEnv L1; see
// docs/reference-values.md, "The image's provenance"). OpenImageProvenance
// checks authenticity and form; CheckArtifact compares an artifact's digest
// with the statement. Whether the builder, build type or parameters are
// acceptable is the caller's policy.

// SLSAProvenancePredicateType is the predicate type of an image provenance
// statement.
const SLSAProvenancePredicateType = "https://slsa.dev/provenance/v1"

// maxImageProvenance bounds the signed provenance OpenImageProvenance reads.
const maxImageProvenance = 1 << 20

// Sentinel errors of OpenImageProvenance and CheckArtifact.
var (
	// ErrProvenanceSignature: the input is not a DSSE envelope of an in-toto
	// statement signed by one of the given keys.
	ErrProvenanceSignature = errors.New("image provenance is not authentic")
	// ErrProvenanceStatement: the signed payload is not a well-formed
	// in-toto Statement v1 with a SLSA provenance v1 predicate.
	ErrProvenanceStatement = errors.New("malformed image provenance")
	// ErrNoSubject: the provenance has no subject of the artifact's name.
	ErrNoSubject = errors.New("no subject")
)

// ImageProvenance is an authenticated image provenance statement.
type ImageProvenance struct {
	// Subjects are the artifacts the provenance is about. Each has a
	// non-empty name, unique in the statement, and a sha256 digest.
	Subjects             []ProvenanceDescriptor `json:"subjects"`
	BuilderID            string                 `json:"builderId"`
	BuildType            string                 `json:"buildType"`
	ExternalParameters   map[string]any         `json:"externalParameters"`
	ResolvedDependencies []ProvenanceDescriptor `json:"resolvedDependencies,omitempty"`
	InvocationID         string                 `json:"invocationId,omitempty"`
	StartedOn            time.Time              `json:"startedOn,omitzero"`
	FinishedOn           time.Time              `json:"finishedOn,omitzero"`
}

// ProvenanceDescriptor is a subject or a resolved dependency of a
// provenance statement (the fields of an in-toto resource descriptor that
// identify it).
type ProvenanceDescriptor struct {
	Name   string            `json:"name,omitempty"`
	URI    string            `json:"uri,omitempty"`
	Digest map[string]string `json:"digest,omitempty"`
}

// ArtifactMismatchError is returned by CheckArtifact when an artifact's
// sha256 is not the one the provenance gives for its name.
type ArtifactMismatchError struct {
	Name       string
	SHA256     [32]byte // the artifact's
	Provenance [32]byte // the provenance's subject's
}

func (e *ArtifactMismatchError) Error() string {
	return fmt.Sprintf("%s: sha256 %x, provenance says %x", e.Name, e.SHA256, e.Provenance)
}

// OpenImageProvenance checks that raw is a DSSE envelope (payload type
// application/vnd.in-toto+json) signed by one of keys whose payload is an
// in-toto Statement v1 with a valid SLSA provenance v1 predicate, and
// returns what it says. Unknown fields are refused. Errors wrap
// ErrProvenanceSignature or ErrProvenanceStatement. This is the
// authenticity half: the caller must still check its artifacts with
// CheckArtifact, and decide whether builder and parameters are acceptable.
func OpenImageProvenance(raw []byte, keys []crypto.PublicKey) (*ImageProvenance, error) {
	payload, err := openSigned(raw, maxImageProvenance, keys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProvenanceSignature, err)
	}
	p, err := parseImageProvenance(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProvenanceStatement, err)
	}
	return p, nil
}

// parseImageProvenance decodes a signed payload strictly with the in-toto
// bindings.
func parseImageProvenance(payload []byte) (*ImageProvenance, error) {
	var st ita.Statement
	if err := protojson.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("statement: %v", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	if st.GetType() != ita.StatementTypeUri {
		return nil, fmt.Errorf("statement type %q, want %q", st.GetType(), ita.StatementTypeUri)
	}
	if st.GetPredicateType() != SLSAProvenancePredicateType {
		return nil, fmt.Errorf("%w: got %q, want %q", scai.ErrPredicateType, st.GetPredicateType(), SLSAProvenancePredicateType)
	}
	subjects, err := provenanceSubjects(st.GetSubject())
	if err != nil {
		return nil, err
	}
	pj, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		return nil, fmt.Errorf("predicate: %v", err)
	}
	var pred slsa.Provenance
	if err := protojson.Unmarshal(pj, &pred); err != nil {
		return nil, fmt.Errorf("SLSA provenance v1 predicate: %v", err)
	}
	if err := pred.Validate(); err != nil {
		return nil, fmt.Errorf("SLSA provenance v1 predicate: %w", err)
	}
	bd, rd := pred.GetBuildDefinition(), pred.GetRunDetails()
	p := &ImageProvenance{
		Subjects:           subjects,
		BuilderID:          rd.GetBuilder().GetId(),
		BuildType:          bd.GetBuildType(),
		ExternalParameters: bd.GetExternalParameters().AsMap(),
		InvocationID:       rd.GetMetadata().GetInvocationId(),
	}
	for _, d := range bd.GetResolvedDependencies() {
		p.ResolvedDependencies = append(p.ResolvedDependencies, descriptor(d))
	}
	if t := rd.GetMetadata().GetStartedOn(); t != nil {
		p.StartedOn = t.AsTime() // CheckValid in Validate
	}
	if t := rd.GetMetadata().GetFinishedOn(); t != nil {
		p.FinishedOn = t.AsTime()
	}
	return p, nil
}

// provenanceSubjects requires every subject to have a unique name and a
// sha256 digest: artifacts are checked by name (Validate has already
// checked that a sha256 digest is 32 bytes of hex).
func provenanceSubjects(list []*ita.ResourceDescriptor) ([]ProvenanceDescriptor, error) {
	seen := map[string]bool{}
	out := make([]ProvenanceDescriptor, 0, len(list))
	for i, s := range list {
		switch {
		case s.GetName() == "":
			return nil, fmt.Errorf("subject %d has no name", i)
		case seen[s.GetName()]:
			return nil, fmt.Errorf("subject %q given twice", s.GetName())
		case s.GetDigest()["sha256"] == "":
			return nil, fmt.Errorf("subject %q has no sha256 digest", s.GetName())
		}
		seen[s.GetName()] = true
		out = append(out, descriptor(s))
	}
	return out, nil
}

func descriptor(rd *ita.ResourceDescriptor) ProvenanceDescriptor {
	d := ProvenanceDescriptor{Name: rd.GetName(), URI: rd.GetUri()}
	if len(rd.GetDigest()) > 0 {
		d.Digest = make(map[string]string, len(rd.GetDigest()))
		for k, v := range rd.GetDigest() {
			d.Digest[k] = v
		}
	}
	return d
}

// CheckArtifact checks that the provenance has a subject named name (an
// artifact's file base name) whose sha256 digest is sum. A different digest
// is an *ArtifactMismatchError; no such subject wraps ErrNoSubject.
func (p *ImageProvenance) CheckArtifact(name string, sum [32]byte) error {
	for _, s := range p.Subjects {
		if s.Name != name {
			continue
		}
		want, err := hex.DecodeString(s.Digest["sha256"])
		if err != nil || len(want) != len(sum) {
			return fmt.Errorf("%s: the provenance gives no valid sha256 digest", name)
		}
		if !bytes.Equal(want, sum[:]) {
			return &ArtifactMismatchError{Name: name, SHA256: sum, Provenance: [32]byte(want)}
		}
		return nil
	}
	names := make([]string, 0, len(p.Subjects))
	for _, s := range p.Subjects {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return fmt.Errorf("%w named %q (subjects: %s)", ErrNoSubject, name, strings.Join(names, ", "))
}
