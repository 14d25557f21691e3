package scai

import (
	"encoding/base64"

	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// Writers for whole statements (in the canonical layout of jsonenc.go: keys
// sorted, no white space), and the direct conversion of a SCAI report to
// the structpb predicate the bindings' Statement holds.

// appendStatement appends a Statement whose predicate is written by pred.
func appendStatement(dst []byte, typ string, subject []*ita.ResourceDescriptor, subjectCanon [][]byte,
	predicateType string, pred func([]byte) ([]byte, error)) ([]byte, error) {
	var err error
	dst = append(dst, '{')
	first := true
	if dst, err = appendStringField(dst, &first, "_type", typ); err != nil {
		return nil, err
	}
	if pred != nil {
		dst = appendKey(dst, first, "predicate")
		first = false
		if dst, err = pred(dst); err != nil {
			return nil, err
		}
	}
	if dst, err = appendStringField(dst, &first, "predicateType", predicateType); err != nil {
		return nil, err
	}
	if len(subject) > 0 {
		dst = appendKey(dst, first, "subject")
		dst = append(dst, '[')
		for i, rd := range subject {
			if i > 0 {
				dst = append(dst, ',')
			}
			if subjectCanon != nil {
				dst = append(dst, subjectCanon[i]...)
			} else if dst, err = appendDescriptor(dst, rd); err != nil {
				return nil, err
			}
		}
		dst = append(dst, ']')
	}
	return append(dst, '}'), nil
}

// encodeStatement writes any Statement (the predicate as a Struct), as Sign
// ships it.
func encodeStatement(st *ita.Statement) ([]byte, error) {
	var pred func([]byte) ([]byte, error)
	if st.GetPredicate() != nil {
		pred = func(dst []byte) ([]byte, error) { return appendStruct(dst, st.GetPredicate(), 2) }
	}
	return appendStatement(make([]byte, 0, 4096), st.GetType(), st.GetSubject(), nil, st.GetPredicateType(), pred)
}

// appendReport appends a SCAI report. targetCanon(i) is the canonical JSON
// of attribute i's target when already known, else nil.
func appendReport(dst []byte, r *scaipb.AttributeReport, targetCanon func(i int) []byte) ([]byte, error) {
	var err error
	dst = append(dst, '{')
	first := true
	if attrs := r.GetAttributes(); len(attrs) > 0 {
		dst = appendKey(dst, first, "attributes")
		first = false
		dst = append(dst, '[')
		for i, at := range attrs {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendAssertion(dst, at, targetCanon(i)); err != nil {
				return nil, err
			}
		}
		dst = append(dst, ']')
	}
	if r.GetProducer() != nil {
		dst = appendKey(dst, first, "producer")
		if dst, err = appendDescriptor(dst, r.GetProducer()); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

func appendAssertion(dst []byte, at *scaipb.AttributeAssertion, targetCanon []byte) ([]byte, error) {
	var err error
	dst = append(dst, '{')
	first := true
	if dst, err = appendStringField(dst, &first, "attribute", at.GetAttribute()); err != nil {
		return nil, err
	}
	if at.GetConditions() != nil {
		dst = appendKey(dst, first, "conditions")
		first = false
		if dst, err = appendStruct(dst, at.GetConditions(), 5); err != nil {
			return nil, err
		}
	}
	if at.GetEvidence() != nil {
		dst = appendKey(dst, first, "evidence")
		first = false
		if dst, err = appendDescriptor(dst, at.GetEvidence()); err != nil {
			return nil, err
		}
	}
	if at.GetTarget() != nil {
		dst = appendKey(dst, first, "target")
		if targetCanon != nil {
			dst = append(dst, targetCanon...)
		} else if dst, err = appendDescriptor(dst, at.GetTarget()); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// reportStruct converts a SCAI report to a Struct directly: the value
// protojson would give by marshalling r and unmarshalling the JSON into a
// Struct. Annotations are deep-copied (the result shares nothing with r).
func reportStruct(r *scaipb.AttributeReport) *structpb.Struct {
	fields := make(map[string]*structpb.Value, 2)
	if attrs := r.GetAttributes(); len(attrs) > 0 {
		vals := make([]*structpb.Value, len(attrs))
		for i, at := range attrs {
			vals[i] = structpb.NewStructValue(assertionStruct(at))
		}
		fields["attributes"] = structpb.NewListValue(&structpb.ListValue{Values: vals})
	}
	if r.GetProducer() != nil {
		fields["producer"] = structpb.NewStructValue(descriptorStruct(r.GetProducer()))
	}
	return &structpb.Struct{Fields: fields}
}

func assertionStruct(at *scaipb.AttributeAssertion) *structpb.Struct {
	fields := make(map[string]*structpb.Value, 2)
	if at.GetAttribute() != "" {
		fields["attribute"] = structpb.NewStringValue(at.GetAttribute())
	}
	if at.GetConditions() != nil {
		fields["conditions"] = structpb.NewStructValue(copyStruct(at.GetConditions()))
	}
	if at.GetEvidence() != nil {
		fields["evidence"] = structpb.NewStructValue(descriptorStruct(at.GetEvidence()))
	}
	if at.GetTarget() != nil {
		fields["target"] = structpb.NewStructValue(descriptorStruct(at.GetTarget()))
	}
	return &structpb.Struct{Fields: fields}
}

func descriptorStruct(rd *ita.ResourceDescriptor) *structpb.Struct {
	fields := make(map[string]*structpb.Value, 5)
	str := func(k, v string) {
		if v != "" {
			fields[k] = structpb.NewStringValue(v)
		}
	}
	str("name", rd.GetName())
	str("uri", rd.GetUri())
	if d := rd.GetDigest(); len(d) > 0 {
		m := make(map[string]*structpb.Value, len(d))
		for k, v := range d {
			m[k] = structpb.NewStringValue(v)
		}
		fields["digest"] = structpb.NewStructValue(&structpb.Struct{Fields: m})
	}
	if c := rd.GetContent(); len(c) > 0 {
		fields["content"] = structpb.NewStringValue(base64.StdEncoding.EncodeToString(c))
	}
	str("downloadLocation", rd.GetDownloadLocation())
	str("mediaType", rd.GetMediaType())
	if rd.GetAnnotations() != nil {
		fields["annotations"] = structpb.NewStructValue(copyStruct(rd.GetAnnotations()))
	}
	return &structpb.Struct{Fields: fields}
}

// copyStruct deep-copies s as a protojson round trip would: a null of any
// enum value becomes NULL_VALUE, a nil list or struct an empty one. The
// caller has checked s encodes (no Value without a kind).
func copyStruct(s *structpb.Struct) *structpb.Struct {
	fields := make(map[string]*structpb.Value, len(s.GetFields()))
	for k, v := range s.GetFields() {
		fields[k] = copyValue(v)
	}
	return &structpb.Struct{Fields: fields}
}

func copyValue(v *structpb.Value) *structpb.Value {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		return structpb.NewStructValue(copyStruct(k.StructValue))
	case *structpb.Value_ListValue:
		vals := make([]*structpb.Value, len(k.ListValue.GetValues()))
		for i, e := range k.ListValue.GetValues() {
			vals[i] = copyValue(e)
		}
		return structpb.NewListValue(&structpb.ListValue{Values: vals})
	case *structpb.Value_NullValue:
		return structpb.NewNullValue()
	case *structpb.Value_BoolValue:
		return structpb.NewBoolValue(k.BoolValue)
	case *structpb.Value_NumberValue:
		return structpb.NewNumberValue(k.NumberValue)
	case *structpb.Value_StringValue:
		return structpb.NewStringValue(k.StringValue)
	default:
		return &structpb.Value{}
	}
}

// cloneDescriptor deep-copies rd (annotations as copyStruct does).
func cloneDescriptor(rd *ita.ResourceDescriptor) *ita.ResourceDescriptor {
	c := &ita.ResourceDescriptor{
		Name:             rd.GetName(),
		Uri:              rd.GetUri(),
		DownloadLocation: rd.GetDownloadLocation(),
		MediaType:        rd.GetMediaType(),
	}
	if len(rd.GetContent()) > 0 {
		c.Content = append([]byte(nil), rd.GetContent()...)
	}
	if d := rd.GetDigest(); d != nil {
		c.Digest = make(map[string]string, len(d))
		for k, v := range d {
			c.Digest[k] = v
		}
	}
	if rd.GetAnnotations() != nil {
		c.Annotations = copyStruct(rd.GetAnnotations())
	}
	return c
}
