package scai

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/attestd/attestd/attest"
	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// The parsers of the report's attributes, called by parseReport in the
// order NewStatement writes them.

func parsePurpose(at *scaipb.AttributeAssertion, a *Attestation, ps *parseState) error {
	name := at.GetAttribute()
	if !strings.HasPrefix(name, AttrPurposePrefix) {
		return fmt.Errorf("%w: attribute 0 is %q, want %s<purpose>", ErrStatement, name, AttrPurposePrefix)
	}
	if err := onlyFields(at, "attribute", "conditions"); err != nil {
		return fmt.Errorf("%w: purpose attribute: %v", ErrStatement, err)
	}
	a.Purpose = attest.Purpose(strings.TrimPrefix(name, AttrPurposePrefix))
	conds, err := stringMap(at.GetConditions())
	if err != nil {
		return fmt.Errorf("%w: purpose conditions: %v", ErrStatement, err)
	}
	if conds[condPurpose] != string(a.Purpose) {
		return fmt.Errorf("%w: purpose condition %q does not match attribute %q", ErrStatement, conds[condPurpose], name)
	}
	b, err := hex.DecodeString(conds[condBinding])
	if err != nil || len(b) != len(a.Binding) || hex.EncodeToString(b) != conds[condBinding] {
		return fmt.Errorf("%w: binding condition is not 64 lower-case hex digits", ErrStatement)
	}
	copy(a.Binding[:], b)
	want := 2
	if id, ok := conds[condBuildID]; ok {
		want++
		a.Build = &Build{ID: id}
		name := condReqDig
		if a.Purpose == attest.PurposeComplete {
			name = condIODig
		}
		h, ok := conds[name]
		if !ok {
			return fmt.Errorf("%w: purpose conditions: %s missing", ErrStatement, name)
		}
		want++
		d, err := hex.DecodeString(h)
		if err != nil || len(d) != 32 || hex.EncodeToString(d) != h {
			return fmt.Errorf("%w: %s condition is not 64 lower-case hex digits", ErrStatement, name)
		}
		ps.buildDigest = [32]byte(d)
	}
	if h, ok := conds[condNonce]; ok {
		want++
		n, err := hex.DecodeString(h)
		if err != nil || hex.EncodeToString(n) != h {
			return fmt.Errorf("%w: nonce condition is not lower-case hex", ErrStatement)
		}
		a.Nonce = n
	}
	if h, ok := conds[condRoot]; ok {
		want += 2
		root, err := hex32(h)
		if err != nil {
			return fmt.Errorf("%w: %s condition is %v", ErrStatement, condRoot, err)
		}
		n, err := strconv.Atoi(conds[condSize])
		if err != nil || strconv.Itoa(n) != conds[condSize] {
			return fmt.Errorf("%w: %s condition is not a decimal number", ErrStatement, condSize)
		}
		a.Batch = &Batch{Root: root, Size: n}
	}
	if len(conds) != want {
		return fmt.Errorf("%w: purpose conditions: unexpected keys", ErrStatement)
	}
	if err := checkPurpose(a.Purpose, a.Nonce, a.Batch); err != nil {
		return fmt.Errorf("%w: %v", ErrStatement, err)
	}
	return nil
}

func parseEnvKey(at *scaipb.AttributeAssertion, a *Attestation) error {
	if err := onlyFields(at, "attribute", "target"); err != nil {
		return fmt.Errorf("%w: %v", ErrEnvKey, err)
	}
	rd := at.GetTarget()
	if err := onlyFields(rd, "name", "digest", "content", "media_type"); err != nil {
		return fmt.Errorf("%w: target: %v", ErrEnvKey, err)
	}
	if rd.GetName() != SubjectName || rd.GetMediaType() != MediaTypeSPKI {
		return fmt.Errorf("%w: target must be named %q with media type %q", ErrEnvKey, SubjectName, MediaTypeSPKI)
	}
	d, err := sha256Digest(rd)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrEnvKey, err)
	}
	der := rd.GetContent()
	if sha256.Sum256(der) != d {
		return fmt.Errorf("%w: digest does not match content", ErrEnvKey)
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrEnvKey, err)
	}
	canon, _, err := encodeKey(pub)
	if err != nil {
		return err
	}
	if !bytes.Equal(canon, der) {
		return fmt.Errorf("%w: key DER is not canonical", ErrEnvKey)
	}
	a.EnvKey = pub
	return nil
}

// parsePart reads an evidence (backend != "") or agent part.
func parsePart(at *scaipb.AttributeAssertion, backend string) (attest.Part, error) {
	if err := onlyFields(at, "attribute", "evidence"); err != nil {
		return attest.Part{}, err
	}
	rd := at.GetEvidence()
	allowed := []string{"name", "digest", "content", "media_type"}
	if backend != "" {
		allowed = append(allowed, "annotations")
	}
	if err := onlyFields(rd, allowed...); err != nil {
		return attest.Part{}, fmt.Errorf("evidence: %v", err)
	}
	if backend != "" {
		ann, err := stringMap(rd.GetAnnotations())
		if err != nil || len(ann) != 1 || ann[annBackend] != backend {
			return attest.Part{}, fmt.Errorf("evidence annotations must be exactly {%q: %q}", annBackend, backend)
		}
	}
	d, err := sha256Digest(rd)
	if err != nil {
		return attest.Part{}, err
	}
	if sha256.Sum256(rd.GetContent()) != d {
		return attest.Part{}, fmt.Errorf("part %q: digest does not match content", rd.GetName())
	}
	if rd.GetName() == "" {
		return attest.Part{}, fmt.Errorf("part without a name")
	}
	return attest.Part{Name: rd.GetName(), MediaType: rd.GetMediaType(), Data: rd.GetContent()}, nil
}

// parseLogRef reads the event log reference: name, sha256 digest, media
// type and a decimal size annotation, and no content. An attestation that
// carries its log inline was made by an attestd before the log travelled
// once per bundle; it is refused with a message that says so.
func parseLogRef(at *scaipb.AttributeAssertion, a *Attestation) error {
	if err := onlyFields(at, "attribute", "evidence"); err != nil {
		return err
	}
	rd := at.GetEvidence()
	if len(rd.GetContent()) > 0 {
		return fmt.Errorf("the event log is inline: this attestation was made by an attestd older than format 2 (event log by reference), which this verifier does not read; attest again with a current attestd")
	}
	if err := onlyFields(rd, "name", "digest", "media_type", "annotations"); err != nil {
		return fmt.Errorf("event log reference: %v", err)
	}
	if rd.GetName() != PartAgentCEL || rd.GetMediaType() != MediaTypeCEL {
		return fmt.Errorf("event log reference must be named %q with media type %q", PartAgentCEL, MediaTypeCEL)
	}
	d, err := sha256Digest(rd)
	if err != nil {
		return err
	}
	ann, err := stringMap(rd.GetAnnotations())
	if err != nil || len(ann) != 1 {
		return fmt.Errorf("event log reference annotations must be exactly {%q: \"<bytes>\"}", annSize)
	}
	n, err := strconv.ParseInt(ann[annSize], 10, 64)
	if err != nil || n <= 0 || sizeString(n) != ann[annSize] {
		return fmt.Errorf("event log reference size %q is not a positive decimal number", ann[annSize])
	}
	a.Log = LogRef{SHA256: d, Size: n}
	return nil
}

func parseProducer(rd *ita.ResourceDescriptor, a *Attestation) error {
	if rd == nil {
		return fmt.Errorf("%w: producer missing", ErrStatement)
	}
	if err := onlyFields(rd, "name", "uri", "annotations"); err != nil {
		return fmt.Errorf("%w: producer: %v", ErrStatement, err)
	}
	if rd.GetName() == "" {
		return fmt.Errorf("%w: producer name missing", ErrStatement)
	}
	a.Producer = Producer{Name: rd.GetName(), URI: rd.GetUri()}
	if rd.GetAnnotations() == nil {
		return nil
	}
	ann, err := stringMap(rd.GetAnnotations())
	if err != nil {
		return fmt.Errorf("%w: producer annotations: %v", ErrStatement, err)
	}
	n := 0
	if v, ok := ann[annVersion]; ok {
		n++
		if v == "" {
			return fmt.Errorf("%w: empty producer version", ErrStatement)
		}
		a.Producer.Version = v
	}
	if v, ok := ann[annIssuedAt]; ok {
		n++
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil || t.IsZero() || t.UTC().Format(time.RFC3339Nano) != v {
			return fmt.Errorf("%w: issuedAt %q is not an RFC 3339 UTC time", ErrStatement, v)
		}
		a.Time = t
	}
	if n == 0 || n != len(ann) {
		return fmt.Errorf("%w: producer annotations: unexpected keys", ErrStatement)
	}
	return nil
}

// stringMap returns s as a map, requiring every value to be a string.
func stringMap(s *structpb.Struct) (map[string]string, error) {
	m := map[string]string{}
	for k, v := range s.GetFields() {
		sv, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return nil, fmt.Errorf("value of %q is not a string", k)
		}
		m[k] = sv.StringValue
	}
	return m, nil
}

// onlyFields fails if m has a populated field not named in allowed (proto
// field names) or is nil.
func onlyFields(m proto.Message, allowed ...string) error {
	r := m.ProtoReflect()
	if !r.IsValid() {
		return fmt.Errorf("%s missing", r.Descriptor().Name())
	}
	var err error
	r.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		for _, a := range allowed {
			if string(fd.Name()) == a {
				return true
			}
		}
		err = fmt.Errorf("unexpected field %q in %s", fd.Name(), r.Descriptor().Name())
		return false
	})
	return err
}

// parseBuildAttr reads one build request, input or output descriptor.
func parseBuildAttr(at *scaipb.AttributeAssertion, a *Attestation, i int, ps *parseState) error {
	if err := onlyFields(at, "attribute", "target"); err != nil {
		return fmt.Errorf("%w: attribute %d: %v", ErrStatement, i, err)
	}
	if a.Build == nil {
		return fmt.Errorf("%w: attribute %d: build descriptor without a build ID", ErrStatement, i)
	}
	rd := at.GetTarget()
	var n int
	switch at.GetAttribute() {
	case AttrBuildRequest:
		n = 0
	case AttrBuildInput:
		n = 1
	case AttrBuildOutput:
		n = 2
	default:
		return fmt.Errorf("%w: attribute %d: unknown build attribute %q", ErrStatement, i, at.GetAttribute())
	}
	if n < ps.buildStage {
		return fmt.Errorf("%w: attribute %d: %q out of order", ErrStatement, i, at.GetAttribute())
	}
	ps.buildStage = n
	switch n {
	case 0:
		a.Build.Request = append(a.Build.Request, rd)
	case 1:
		a.Build.Inputs = append(a.Build.Inputs, rd)
	case 2:
		a.Build.Outputs = append(a.Build.Outputs, rd)
	}
	return nil
}
