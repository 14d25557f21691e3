package scai

import (
	"encoding/base64"
	"errors"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/types/known/structpb"
)

// This file writes the JSON attestd signs and digests, directly from the Go
// values: every object with its keys sorted, no insignificant whitespace,
// fields left out where protojson leaves them out (empty strings, bytes and
// maps; nil messages), protojson's field names (mediaType, _type…), bytes as
// padded standard base64, strings escaped as encoding/json escapes them with
// HTML escaping off, and numbers formatted as protojson formats them.
//
// For a ResourceDescriptor that is exactly the canonical form the descriptor
// digests hash (docs/formats.md, section 1), which attestd used to compute
// as protojson → encoding/json decode → encode; canon_test.go checks the two
// agree. Inputs protojson refuses (invalid UTF-8, a Value with no kind, NaN
// or ±Inf) are refused here too.

// maxDepth bounds the nesting of structpb values, as encoding/json's decoder
// bounded it when the canonical form went through it.
const maxDepth = 10000

var (
	errUTF8     = errors.New("string is not valid UTF-8")
	errNoKind   = errors.New("google.protobuf.Value: none of the oneof fields is set")
	errTooDeep  = errors.New("value nested too deeply")
	errBadFloat = errors.New("google.protobuf.Value: number is NaN or infinite")
)

// appendString appends s as a JSON string the way encoding/json writes it
// with SetEscapeHTML(false): `"` and `\` escaped, control characters as
// \b \f \n \r \t or \u00XX, U+2028 and U+2029 escaped, all else verbatim.
// Invalid UTF-8 is an error (protojson refuses it).
func appendString(dst []byte, s string) ([]byte, error) {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			return nil, errUTF8
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"'), nil
}

const hexDigits = "0123456789abcdef"

// appendFloat appends n as protojson writes a google.protobuf.Value number
// (shortest representation, 'e' notation below 1e-6 and from 1e21 on, a
// two-digit exponent without a leading zero). NaN and ±Inf are errors.
func appendFloat(dst []byte, n float64) ([]byte, error) {
	if math.IsNaN(n) || math.IsInf(n, 0) {
		return nil, errBadFloat
	}
	format := byte('f')
	if abs := math.Abs(n); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, n, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		l := len(dst)
		if l >= 4 && dst[l-4] == 'e' && dst[l-3] == '-' && dst[l-2] == '0' {
			dst[l-2] = dst[l-1]
			dst = dst[:l-1]
		}
	}
	return dst, nil
}

// appendBase64 appends b as a JSON string of padded standard base64.
func appendBase64(dst []byte, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendKey appends `"key":` (or `,"key":` when not first) for a key that
// needs no escaping.
func appendKey(dst []byte, first bool, key string) []byte {
	if !first {
		dst = append(dst, ',')
	}
	dst = append(dst, '"')
	dst = append(dst, key...)
	return append(dst, '"', ':')
}

// appendStringField appends `"key":"value"` unless value is empty.
func appendStringField(dst []byte, first *bool, key, value string) ([]byte, error) {
	if value == "" {
		return dst, nil
	}
	dst = appendKey(dst, *first, key)
	*first = false
	return appendString(dst, value)
}

// appendDescriptor appends rd's canonical JSON (keys sorted: annotations,
// content, digest, downloadLocation, mediaType, name, uri).
func appendDescriptor(dst []byte, rd *ita.ResourceDescriptor) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	var err error
	if rd.GetAnnotations() != nil {
		dst = appendKey(dst, first, "annotations")
		first = false
		if dst, err = appendStruct(dst, rd.GetAnnotations(), 2); err != nil {
			return nil, err
		}
	}
	if c := rd.GetContent(); len(c) > 0 {
		dst = appendKey(dst, first, "content")
		first = false
		dst = appendBase64(dst, c)
	}
	if d := rd.GetDigest(); len(d) > 0 {
		dst = appendKey(dst, first, "digest")
		first = false
		if dst, err = appendStringMap(dst, d); err != nil {
			return nil, err
		}
	}
	if dst, err = appendStringField(dst, &first, "downloadLocation", rd.GetDownloadLocation()); err != nil {
		return nil, err
	}
	if dst, err = appendStringField(dst, &first, "mediaType", rd.GetMediaType()); err != nil {
		return nil, err
	}
	if dst, err = appendStringField(dst, &first, "name", rd.GetName()); err != nil {
		return nil, err
	}
	if dst, err = appendStringField(dst, &first, "uri", rd.GetUri()); err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// appendStringMap appends m as a JSON object with sorted keys.
func appendStringMap(dst []byte, m map[string]string) ([]byte, error) {
	return appendObject(dst, m, appendString)
}

// appendStruct appends s as a JSON object with sorted keys; a nil s is {}
// (protojson writes a nil Struct inside a Value that way). depth is the
// nesting level of the object itself (the descriptor is level 1).
func appendStruct(dst []byte, s *structpb.Struct, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errTooDeep
	}
	return appendObject(dst, s.GetFields(), func(dst []byte, v *structpb.Value) ([]byte, error) {
		return appendValue(dst, v, depth)
	})
}

// appendObject appends m as a JSON object, keys sorted, each value written
// by value. One key (a digest set's usual sha256) needs no sorting.
func appendObject[V any](dst []byte, m map[string]V, value func([]byte, V) ([]byte, error)) ([]byte, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	if len(keys) > 1 {
		slices.Sort(keys)
	}
	dst = append(dst, '{')
	var err error
	for i, k := range keys {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, err = appendString(dst, k); err != nil {
			return nil, err
		}
		dst = append(dst, ':')
		if dst, err = value(dst, m[k]); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// appendValue appends one google.protobuf.Value held in a container at
// nesting level depth.
func appendValue(dst []byte, v *structpb.Value, depth int) ([]byte, error) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_NullValue:
		return append(dst, "null"...), nil
	case *structpb.Value_BoolValue:
		return strconv.AppendBool(dst, k.BoolValue), nil
	case *structpb.Value_NumberValue:
		return appendFloat(dst, k.NumberValue)
	case *structpb.Value_StringValue:
		return appendString(dst, k.StringValue)
	case *structpb.Value_StructValue:
		return appendStruct(dst, k.StructValue, depth+1)
	case *structpb.Value_ListValue:
		if depth+1 > maxDepth {
			return nil, errTooDeep
		}
		dst = append(dst, '[')
		var err error
		for i, e := range k.ListValue.GetValues() {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = appendValue(dst, e, depth+1); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	default:
		return nil, errNoKind
	}
}

// canonicalDescriptor is the descriptor's canonical JSON, the bytes the
// request and io digests hash (docs/formats.md, section 1).
func canonicalDescriptor(rd *ita.ResourceDescriptor) ([]byte, error) {
	return appendDescriptor(make([]byte, 0, descriptorSizeHint(rd)), rd)
}

// descriptorSizeHint guesses a descriptor's encoded size, to allocate once.
func descriptorSizeHint(rd *ita.ResourceDescriptor) int {
	n := 64 + len(rd.GetName()) + len(rd.GetUri()) + len(rd.GetMediaType()) + len(rd.GetDownloadLocation()) +
		base64.StdEncoding.EncodedLen(len(rd.GetContent()))
	for k, v := range rd.GetDigest() {
		n += len(k) + len(v) + 6
	}
	if rd.GetAnnotations() != nil {
		n += 128
	}
	return n
}
