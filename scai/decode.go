package scai

import (
	"bytes"
	"encoding/base64"
	"fmt"

	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
)

// The typed decoders read the statement into the in-toto and SCAI Go types
// in one pass. They accept the JSON form protojson writes and nothing looser:
// only protojson's field names (mediaType, not media_type; _type, not type),
// no null, no empty value where protojson would leave the field out, bytes
// as padded standard base64 with no line breaks. So a statement reads the
// same to every JSON consumer, and it is the same statement the published
// bindings (protojson) decode.

// statementDoc is a decoded in-toto Statement.
type statementDoc struct {
	typ, predicateType string
	subject            []*ita.ResourceDescriptor
	hasPredicate       bool
	report             *scaipb.AttributeReport // nil if the predicate is not one
	predicateErr       error                   // why it is not
}

var (
	statementFields  = []string{"_type", "predicate", "predicateType", "subject"}
	reportFields     = []string{"attributes", "producer"}
	assertionFields  = []string{"attribute", "conditions", "evidence", "target"}
	descriptorFields = []string{"annotations", "content", "digest", "downloadLocation", "mediaType", "name", "uri"}
)

// decodeStatement reads payload as an in-toto Statement. A predicate that is
// not a well-formed SCAI report is not an error here (predicateErr): the
// caller reports a wrong predicate type first.
func decodeStatement(payload []byte) (*statementDoc, error) {
	r := &reader{b: payload}
	doc := &statementDoc{}
	err := r.fields("statement", statementFields, func(i int) error {
		var err error
		switch i {
		case 0:
			doc.typ, err = r.str()
		case 1:
			doc.hasPredicate = true
			start, depth := r.i, r.depth
			doc.report, doc.predicateErr = r.report()
			if doc.predicateErr != nil {
				// Read it again as any JSON, to get past it.
				doc.report = nil
				r.i, r.depth = start, depth
				_, err = r.structValue()
			}
		case 2:
			doc.predicateType, err = r.str()
		case 3:
			err = r.array(func() error {
				rd, err := r.descriptor()
				doc.subject = append(doc.subject, rd)
				return err
			})
			if err == nil && len(doc.subject) == 0 {
				err = errEmpty
			}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return doc, nil
}

// report reads a SCAI AttributeReport.
func (r *reader) report() (*scaipb.AttributeReport, error) {
	rep := &scaipb.AttributeReport{}
	err := r.fields("predicate", reportFields, func(i int) error {
		var err error
		switch i {
		case 0:
			err = r.array(func() error {
				at, err := r.assertion()
				rep.Attributes = append(rep.Attributes, at)
				if err != nil {
					return fmt.Errorf("attribute %d: %w", len(rep.Attributes)-1, err)
				}
				return nil
			})
			if err == nil && len(rep.Attributes) == 0 {
				err = errEmpty
			}
		case 1:
			rep.Producer, err = r.descriptor()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

func (r *reader) assertion() (*scaipb.AttributeAssertion, error) {
	at := &scaipb.AttributeAssertion{}
	err := r.fields("attribute", assertionFields, func(i int) error {
		var err error
		switch i {
		case 0:
			at.Attribute, err = r.internedStr()
		case 1:
			at.Conditions, err = r.structValue()
		case 2:
			at.Evidence, err = r.descriptor()
		case 3:
			at.Target, err = r.descriptor()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return at, nil
}

// descriptor reads an in-toto ResourceDescriptor.
func (r *reader) descriptor() (*ita.ResourceDescriptor, error) {
	rd := &ita.ResourceDescriptor{}
	err := r.fields("resource descriptor", descriptorFields, func(i int) error {
		var err error
		switch i {
		case 0:
			rd.Annotations, err = r.structValue()
		case 1:
			rd.Content, err = r.base64()
		case 2:
			rd.Digest, err = r.digestSet()
		case 3:
			rd.DownloadLocation, err = r.str()
		case 4:
			rd.MediaType, err = r.str()
		case 5:
			rd.Name, err = r.str()
		case 6:
			rd.Uri, err = r.str()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return rd, nil
}

// base64 reads non-empty, padded standard base64 with no line breaks and
// no stray bits (the one spelling of each byte string).
func (r *reader) base64() ([]byte, error) {
	s, err := r.rawString()
	if err != nil {
		return nil, err
	}
	if len(s) == 0 {
		return nil, errEmpty
	}
	if bytes.IndexByte(s, '\n') >= 0 || bytes.IndexByte(s, '\r') >= 0 {
		return nil, fmt.Errorf("not standard base64")
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Strict().Decode(out, s)
	if err != nil {
		return nil, fmt.Errorf("not standard base64")
	}
	return out[:n], nil
}

// digestSet reads a non-empty object of strings.
func (r *reader) digestSet() (map[string]string, error) {
	m := map[string]string{}
	err := r.object(func(key []byte) error {
		if _, dup := m[string(key)]; dup {
			return fmt.Errorf("duplicate key %q", key)
		}
		k := intern(key)
		v, err := r.rawString()
		if err != nil {
			return err
		}
		m[k] = string(v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(m) == 0 {
		return nil, errEmpty
	}
	return m, nil
}

// internedStr is str, without allocating for the attribute names attestd
// writes many times.
func (r *reader) internedStr() (string, error) {
	b, err := r.rawString()
	if err != nil {
		return "", err
	}
	if len(b) == 0 {
		return "", errEmpty
	}
	return intern(b), nil
}

// intern returns string(b), without allocating for common names.
func intern(b []byte) string {
	switch string(b) {
	case AttrBuildRequest:
		return AttrBuildRequest
	case AttrBuildInput:
		return AttrBuildInput
	case AttrBuildOutput:
		return AttrBuildOutput
	case AttrEnvKey:
		return AttrEnvKey
	case AttrAgent:
		return AttrAgent
	case digestSHA256:
		return digestSHA256
	}
	return string(b)
}
