package scai

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/attestd/attestd/attest"
	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// prepared is an Attestation that passed every check, as a SCAI report,
// with the canonical JSON of its build descriptors.
type prepared struct {
	report *scaipb.AttributeReport
	// subject is the env key's descriptor, or the build's outputs (the
	// caller's, not copies).
	subject []*ita.ResourceDescriptor
	// outputSubjects: subject is the outputs, whose canonical JSON ends build.
	outputSubjects bool
	// build holds the canonical JSON of the build descriptors, which are the
	// report's attributes from index 2 on, in order; for a completion the
	// last len(subject) of them are the outputs.
	build [][]byte
}

// prepare checks a and lays out its report. Each build descriptor is
// encoded once, for its check, the build digest and the payload.
func prepare(a *Attestation) (*prepared, error) {
	if a == nil {
		return nil, fmt.Errorf("nil attestation")
	}
	if err := checkPurpose(a.Purpose, a.Nonce, a.Batch); err != nil {
		return nil, err
	}
	der, kd, err := encodeKey(a.EnvKey)
	if err != nil {
		return nil, err
	}
	bc, err := checkBuild(a.Purpose, a.Build)
	if err != nil {
		return nil, err
	}
	if bindingFor(a, kd, bc.digest) != a.Binding {
		return nil, fmt.Errorf("%w: binding is not attest.Bind(purpose, key digest, binding data)", ErrBinding)
	}
	if a.Producer.Name == "" {
		return nil, fmt.Errorf("producer name is empty")
	}
	kdHex := hex.EncodeToString(kd[:])
	p := &prepared{build: bc.all()}

	attrs := make([]*scaipb.AttributeAssertion, 0, 3+len(p.build)+evidenceParts(a.Evidence))
	attrs = append(attrs,
		&scaipb.AttributeAssertion{Attribute: AttrPurposePrefix + string(a.Purpose), Conditions: conditions(a, bc)},
		&scaipb.AttributeAssertion{Attribute: AttrEnvKey, Target: &ita.ResourceDescriptor{
			Name:      SubjectName,
			Digest:    map[string]string{digestSHA256: kdHex},
			Content:   der,
			MediaType: MediaTypeSPKI,
		}})
	attrs = appendBuildAttributes(attrs, a.Build)
	if attrs, err = appendEvidence(attrs, a.Evidence); err != nil {
		return nil, err
	}
	if a.Log.Size <= 0 {
		return nil, fmt.Errorf("no event log reference")
	}
	attrs = append(attrs, &scaipb.AttributeAssertion{Attribute: AttrAgent, Evidence: &ita.ResourceDescriptor{
		Name:        PartAgentCEL,
		Digest:      map[string]string{digestSHA256: hex.EncodeToString(a.Log.SHA256[:])},
		MediaType:   MediaTypeCEL,
		Annotations: stringStruct(annSize, sizeString(a.Log.Size)),
	}})
	producer, err := producerDescriptor(a.Producer, a.Time)
	if err != nil {
		return nil, err
	}
	p.report = &scaipb.AttributeReport{Attributes: attrs, Producer: producer}
	// The build descriptors were validated by checkBuild; the rest are ours.
	if err := validateReport(p.report, len(p.build)); err != nil {
		return nil, err
	}
	if a.Purpose == attest.PurposeComplete {
		p.subject, p.outputSubjects = a.Build.Outputs, true
	} else {
		p.subject = []*ita.ResourceDescriptor{{Name: SubjectName, Digest: map[string]string{digestSHA256: kdHex}}}
	}
	return p, nil
}

// encode writes the statement.
func (p *prepared) encode() ([]byte, error) {
	var subjectCanon [][]byte
	if p.outputSubjects {
		subjectCanon = p.build[len(p.build)-len(p.subject):]
	}
	targetCanon := func(i int) []byte {
		if i >= 2 && i-2 < len(p.build) {
			return p.build[i-2]
		}
		return nil
	}
	pred := func(dst []byte) ([]byte, error) { return appendReport(dst, p.report, targetCanon) }
	return appendStatement(make([]byte, 0, p.sizeHint()), ita.StatementTypeUri, p.subject, subjectCanon, PredicateType, pred)
}

// sizeHint is about the encoded size, so that encode allocates once.
func (p *prepared) sizeHint() int {
	n := 4096
	for _, c := range p.build {
		n += 2*len(c) + 48
	}
	for _, at := range p.report.GetAttributes() {
		if e := at.GetEvidence(); e != nil {
			n += base64.StdEncoding.EncodedLen(len(e.GetContent())) + len(e.GetName()) + len(e.GetMediaType()) + 192
		}
	}
	return n
}

// validateReport is AttributeReport.Validate, skipping the targets of the
// n build attributes from index 2 on (checkBuild validated them).
func validateReport(r *scaipb.AttributeReport, n int) error {
	for i, at := range r.GetAttributes() {
		if i >= 2 && i < 2+n {
			continue
		}
		if err := at.Validate(); err != nil {
			return fmt.Errorf("attribute %d: %w", i, err)
		}
	}
	if err := r.GetProducer().Validate(); err != nil {
		return fmt.Errorf("producer: %w", err)
	}
	return nil
}

// conditions are the purpose attribute's conditions.
func conditions(a *Attestation, bc buildCanon) *structpb.Struct {
	c := map[string]*structpb.Value{
		condPurpose: structpb.NewStringValue(string(a.Purpose)),
		condBinding: structpb.NewStringValue(hex.EncodeToString(a.Binding[:])),
	}
	if a.Nonce != nil {
		c[condNonce] = structpb.NewStringValue(hex.EncodeToString(a.Nonce))
	}
	if a.Batch != nil {
		c[condRoot] = structpb.NewStringValue(hex.EncodeToString(a.Batch.Root[:]))
		c[condSize] = structpb.NewStringValue(strconv.Itoa(a.Batch.Size))
	}
	if a.Build != nil {
		c[condBuildID] = structpb.NewStringValue(a.Build.ID)
		c[bc.cond] = structpb.NewStringValue(hex.EncodeToString(bc.digest[:]))
	}
	return &structpb.Struct{Fields: c}
}

func stringStruct(k, v string) *structpb.Struct {
	return &structpb.Struct{Fields: map[string]*structpb.Value{k: structpb.NewStringValue(v)}}
}

func evidenceParts(evs []*attest.Evidence) int {
	n := 0
	for _, ev := range evs {
		if ev != nil {
			n += len(ev.Parts)
		}
	}
	return n
}

// appendEvidence appends one attribute per evidence part.
func appendEvidence(attrs []*scaipb.AttributeAssertion, evs []*attest.Evidence) ([]*scaipb.AttributeAssertion, error) {
	seen := map[string]bool{}
	for i, ev := range evs {
		if ev == nil {
			return nil, fmt.Errorf("evidence %d is nil", i)
		}
		if !backendName.MatchString(ev.Backend) {
			return nil, fmt.Errorf("evidence %d: bad backend name %q", i, ev.Backend)
		}
		if seen[ev.Backend] {
			return nil, fmt.Errorf("two evidences from backend %q", ev.Backend)
		}
		seen[ev.Backend] = true
		if len(ev.Parts) == 0 {
			return nil, fmt.Errorf("evidence from %q has no parts", ev.Backend)
		}
		if err := checkParts(ev.Parts); err != nil {
			return nil, fmt.Errorf("evidence from %q: %w", ev.Backend, err)
		}
		ann := stringStruct(annBackend, ev.Backend)
		for _, p := range ev.Parts {
			rd := partDescriptor(p)
			rd.Annotations = ann
			attrs = append(attrs, &scaipb.AttributeAssertion{Attribute: AttrEvidencePrefix + ev.Backend, Evidence: rd})
		}
	}
	return attrs, nil
}
