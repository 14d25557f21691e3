package scai

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"

	"github.com/attestd/attestd/attest"
	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Opened is a parsed, not yet authenticated, attestd envelope.
type Opened struct {
	// Attestation is what the statement asserts.
	Attestation *Attestation
	// Payload is the exact payload bytes that were signed.
	Payload []byte

	doc  *statementDoc
	once sync.Once
	st   *ita.Statement
}

// Statement returns the decoded payload as the bindings' Statement (the
// predicate as a Struct). It is built on the first call: verifying needs
// only Attestation.
func (o *Opened) Statement() *ita.Statement {
	o.once.Do(func() {
		o.st = &ita.Statement{
			Type:          o.doc.typ,
			Subject:       o.doc.subject,
			PredicateType: o.doc.predicateType,
			Predicate:     reportStruct(o.doc.report),
		}
	})
	return o.st
}

// Open decodes env's payload as an attestd statement and rebuilds the
// Attestation it asserts. It is strict: unknown fields, unknown attributes,
// attributes out of order, digests that do not match content, and a subject
// that is not the digest of the embedded environment key are errors.
//
// Open does NOT verify the signature: call VerifySignature with
// Attestation.EnvKey (or a key you expect), and have the evidence checked
// against Binding and EnvKey, before trusting anything returned.
func Open(env *dsse.Envelope) (*Opened, error) {
	if env == nil {
		return nil, fmt.Errorf("%w: nil envelope", ErrEnvelope)
	}
	if env.PayloadType != PayloadType {
		return nil, fmt.Errorf("%w: got %q, want %q", ErrPayloadType, env.PayloadType, PayloadType)
	}
	payload, err := decodePayload(env)
	if err != nil {
		return nil, err
	}
	doc, err := decodeStatement(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: decode statement: %v", ErrStatement, err)
	}
	if err := doc.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatement, err)
	}
	if doc.predicateType != PredicateType {
		return nil, fmt.Errorf("%w: got %q, want %q", ErrPredicateType, doc.predicateType, PredicateType)
	}
	if doc.predicateErr != nil {
		return nil, fmt.Errorf("%w: predicate is not a SCAI attribute report: %v", ErrStatement, doc.predicateErr)
	}
	report := doc.report
	if err := report.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatement, err)
	}
	a, ps, err := parseReport(report)
	if err != nil {
		return nil, err
	}
	kd, err := attest.KeyDigest(a.EnvKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvKey, err)
	}
	bc, buildErr := checkBuild(a.Purpose, a.Build)
	if a.Purpose == attest.PurposeComplete {
		if a.Build == nil {
			return nil, fmt.Errorf("%w: %v", ErrStatement, buildErr)
		}
		// The subjects are checked before the build: a wrong subject is
		// ErrSubject even when the outputs are also bad.
		var outCanon [][]byte
		if buildErr == nil {
			outCanon = bc.lists[1]
		}
		if err := checkOutputSubjects(doc.subject, a.Build.Outputs, outCanon); err != nil {
			return nil, err
		}
	} else {
		subjectDigest, err := parseSubject(doc.subject)
		if err != nil {
			return nil, err
		}
		if kd != subjectDigest {
			return nil, fmt.Errorf("%w: subject digest %x is not the env key's digest %x", ErrSubject, subjectDigest, kd)
		}
	}
	if buildErr != nil {
		return nil, fmt.Errorf("%w: %v", ErrStatement, buildErr)
	}
	if bindingFor(a, kd, bc.digest) != a.Binding {
		return nil, fmt.Errorf("%w: binding is not attest.Bind(purpose, key digest, binding data)", ErrBinding)
	}
	if a.Build != nil && bc.digest != ps.buildDigest {
		return nil, fmt.Errorf("%w: recorded build digest %x is not the digest %x of the build descriptors", ErrStatement, ps.buildDigest, bc.digest)
	}
	return &Opened{Attestation: a, Payload: payload, doc: doc}, nil
}

// validate is Statement.Validate, and the statement type must be v1.
func (doc *statementDoc) validate() error {
	if doc.typ != ita.StatementTypeUri {
		return fmt.Errorf("statement type %q, want %q", doc.typ, ita.StatementTypeUri)
	}
	if len(doc.subject) == 0 {
		return ita.ErrSubjectRequired
	}
	for _, rd := range doc.subject {
		if err := rd.Validate(); err != nil {
			return err
		}
		if len(rd.GetDigest()) == 0 {
			return ita.ErrDigestRequired
		}
	}
	if doc.predicateType == "" {
		return ita.ErrPredicateTypeRequired
	}
	if !doc.hasPredicate {
		return ita.ErrPredicateRequired
	}
	return nil
}

// parseSubject returns the digest of the only subject, which must be
// {name: "env-key", digest: {sha256: …}}.
func parseSubject(subj []*ita.ResourceDescriptor) ([32]byte, error) {
	if len(subj) != 1 {
		return [32]byte{}, fmt.Errorf("%w: %d subjects, want 1", ErrSubject, len(subj))
	}
	rd := subj[0]
	if err := onlyFields(rd, "name", "digest"); err != nil {
		return [32]byte{}, fmt.Errorf("%w: %v", ErrSubject, err)
	}
	if rd.GetName() != SubjectName {
		return [32]byte{}, fmt.Errorf("%w: subject name %q, want %q", ErrSubject, rd.GetName(), SubjectName)
	}
	d, err := sha256Digest(rd)
	if err != nil {
		return [32]byte{}, fmt.Errorf("%w: %v", ErrSubject, err)
	}
	return d, nil
}

// sha256Digest returns the digest set's only entry, which must be a
// lower-case hex sha256.
func sha256Digest(rd *ita.ResourceDescriptor) ([32]byte, error) {
	var d [32]byte
	ds := rd.GetDigest()
	h, ok := ds[digestSHA256]
	if len(ds) != 1 || !ok {
		return d, fmt.Errorf("digest of %q must be exactly one sha256", rd.GetName())
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(d) || hex.EncodeToString(b) != h {
		return d, fmt.Errorf("digest of %q is not 64 lower-case hex digits", rd.GetName())
	}
	copy(d[:], b)
	return d, nil
}

// parseState is what parsing carries between attributes.
type parseState struct {
	buildDigest [32]byte // recorded in the purpose conditions
	buildStage  int      // 0 request, 1 inputs, 2 outputs
}

// parseReport rebuilds the Attestation from the report. Attributes must come
// in the order NewStatement writes them: purpose, env key, build descriptors
// (request, inputs, outputs), evidence parts (grouped by backend), the event
// log reference.
func parseReport(r *scaipb.AttributeReport) (*Attestation, *parseState, error) {
	ps := &parseState{}
	attrs := r.GetAttributes()
	if len(attrs) < 2 {
		return nil, nil, fmt.Errorf("%w: want at least the purpose and env key attributes", ErrStatement)
	}
	a := &Attestation{}
	if err := parsePurpose(attrs[0], a, ps); err != nil {
		return nil, nil, err
	}
	if attrs[1].GetAttribute() != AttrEnvKey {
		return nil, nil, fmt.Errorf("%w: attribute 1 is %q, want %q", ErrEnvKey, attrs[1].GetAttribute(), AttrEnvKey)
	}
	if err := parseEnvKey(attrs[1], a); err != nil {
		return nil, nil, err
	}
	i := 2
	for ; i < len(attrs) && strings.HasPrefix(attrs[i].GetAttribute(), "attestd.dev/build/"); i++ {
		if err := parseBuildAttr(attrs[i], a, i, ps); err != nil {
			return nil, nil, err
		}
	}
	var cur *attest.Evidence
	seen := map[string]bool{}
	for ; i < len(attrs) && strings.HasPrefix(attrs[i].GetAttribute(), AttrEvidencePrefix); i++ {
		backend := strings.TrimPrefix(attrs[i].GetAttribute(), AttrEvidencePrefix)
		if !backendName.MatchString(backend) {
			return nil, nil, fmt.Errorf("%w: attribute %d: bad backend name %q", ErrStatement, i, backend)
		}
		if cur == nil || cur.Backend != backend {
			if seen[backend] {
				return nil, nil, fmt.Errorf("%w: attribute %d: evidence from %q is not contiguous", ErrStatement, i, backend)
			}
			seen[backend] = true
			cur = &attest.Evidence{Backend: backend}
			a.Evidence = append(a.Evidence, cur)
		}
		p, err := parsePart(attrs[i], backend)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: attribute %d: %v", ErrStatement, i, err)
		}
		if _, dup := cur.Part(p.Name); dup {
			return nil, nil, fmt.Errorf("%w: attribute %d: duplicate part %q", ErrStatement, i, p.Name)
		}
		cur.Parts = append(cur.Parts, p)
	}
	if i != len(attrs)-1 || attrs[i].GetAttribute() != AttrAgent {
		if i < len(attrs) {
			return nil, nil, fmt.Errorf("%w: attribute %d: unexpected attribute %q", ErrStatement, i, attrs[i].GetAttribute())
		}
		return nil, nil, fmt.Errorf("%w: no event log reference (%s attribute)", ErrStatement, AttrAgent)
	}
	if err := parseLogRef(attrs[i], a); err != nil {
		return nil, nil, fmt.Errorf("%w: attribute %d: %v", ErrStatement, i, err)
	}
	if err := parseProducer(r.GetProducer(), a); err != nil {
		return nil, nil, err
	}
	return a, ps, nil
}

// checkOutputSubjects requires the completion's subjects to be exactly its
// outputs, in order (equal canonical JSON). outCanon is the outputs'
// canonical JSON, or nil to compute it.
func checkOutputSubjects(subj, outputs []*ita.ResourceDescriptor, outCanon [][]byte) error {
	if len(subj) != len(outputs) {
		return fmt.Errorf("%w: %d subjects but %d outputs", ErrSubject, len(subj), len(outputs))
	}
	var buf []byte
	for i := range subj {
		s, err := appendDescriptor(buf[:0], subj[i])
		if err != nil {
			return fmt.Errorf("%w: subject %d: %v", ErrSubject, i, err)
		}
		buf = s
		var o []byte
		if outCanon != nil {
			o = outCanon[i]
		} else if o, err = canonicalDescriptor(outputs[i]); err != nil {
			return fmt.Errorf("%w: subject %d is not output %d", ErrSubject, i, i)
		}
		if !bytes.Equal(s, o) {
			return fmt.Errorf("%w: subject %d is not output %d", ErrSubject, i, i)
		}
	}
	return nil
}
