package scai

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"
)

// This file is a small strict JSON reader for Open: it walks the payload
// once and the typed decoders (decode.go) fill the in-toto and SCAI Go types
// directly. It accepts RFC 8259 JSON (UTF-8, no duplicate object keys,
// strings and numbers as protojson reads them) and nothing else; which keys
// and values may appear is the typed decoders' business.

// maxDecodeDepth bounds the nesting of the payload. A build descriptor's
// canonical JSON is at most MaxDescriptorSize bytes, so what attestd writes
// nests far less; protojson's own limit is higher.
const maxDecodeDepth = 5000

type reader struct {
	b     []byte
	i     int
	depth int
}

// syntaxError is what the reader returns for malformed JSON.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("offset %d: %s", e.off, e.msg) }

func (r *reader) errorf(format string, args ...any) error {
	return &syntaxError{off: r.i, msg: fmt.Sprintf(format, args...)}
}

func (r *reader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (r *reader) peek() byte {
	r.ws()
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

func (r *reader) expect(c byte) error {
	if r.peek() != c {
		if r.i >= len(r.b) {
			return r.errorf("unexpected end of JSON, want %q", c)
		}
		return r.errorf("unexpected %q, want %q", r.b[r.i], c)
	}
	r.i++
	return nil
}

// end checks nothing but white space is left.
func (r *reader) end() error {
	if r.peek() != 0 || r.i < len(r.b) {
		return r.errorf("data after the JSON value")
	}
	return nil
}

func (r *reader) enter() error {
	r.depth++
	if r.depth > maxDecodeDepth {
		return r.errorf("nested more than %d levels", maxDecodeDepth)
	}
	return nil
}

// object reads an object, calling field with each key (valid only during
// the call), which must read the value. Keys are matched exactly; callers
// reject duplicates (fields does).
func (r *reader) object(field func(key []byte) error) error {
	if err := r.enter(); err != nil {
		return err
	}
	if err := r.expect('{'); err != nil {
		return err
	}
	if r.peek() == '}' {
		r.i++
		r.depth--
		return nil
	}
	for {
		key, err := r.rawString()
		if err != nil {
			return err
		}
		if err := r.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			r.depth--
			return nil
		default:
			return r.errorf("want ',' or '}' in object")
		}
	}
}

// fields reads an object whose keys must be among names, each at most once;
// field(i) reads the value of names[i].
func (r *reader) fields(what string, names []string, field func(i int) error) error {
	var seen uint32
	return r.object(func(key []byte) error {
		for i, n := range names {
			if string(key) != n {
				continue
			}
			if seen&(1<<i) != 0 {
				return fmt.Errorf("duplicate field %q in %s", n, what)
			}
			seen |= 1 << i
			if err := field(i); err != nil {
				return fmt.Errorf("%s: %w", n, err)
			}
			return nil
		}
		return fmt.Errorf("unknown field %q in %s", key, what)
	})
}

// array reads an array, calling elem for each element.
func (r *reader) array(elem func() error) error {
	if err := r.enter(); err != nil {
		return err
	}
	if err := r.expect('['); err != nil {
		return err
	}
	if r.peek() == ']' {
		r.i++
		r.depth--
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			r.depth--
			return nil
		default:
			return r.errorf("want ',' or ']' in array")
		}
	}
}

// rawString reads a string and returns its value as UTF-8 bytes: a slice of
// the input when the string has no escapes (do not modify or keep it past
// the input's life), else a fresh buffer.
func (r *reader) rawString() ([]byte, error) {
	if r.peek() != '"' {
		return nil, r.errorf("want a string")
	}
	r.i++
	start := r.i
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			s := r.b[start:r.i]
			r.i++
			if !utf8.Valid(s) {
				return nil, r.errorf("invalid UTF-8 in string")
			}
			return s, nil
		case c == '\\':
			return r.escapedString(start)
		case c < 0x20:
			return nil, r.errorf("control character in string")
		}
		r.i++
	}
	return nil, r.errorf("unterminated string")
}

// escapedString continues rawString at the first backslash.
func (r *reader) escapedString(start int) ([]byte, error) {
	out := make([]byte, 0, r.i-start+16)
	out = append(out, r.b[start:r.i]...)
	if !utf8.Valid(out) {
		return nil, r.errorf("invalid UTF-8 in string")
	}
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			r.i++
			return out, nil
		case c < 0x20:
			return nil, r.errorf("control character in string")
		case c == '\\':
			if r.i+1 >= len(r.b) {
				return nil, r.errorf("unterminated string")
			}
			switch e := r.b[r.i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				cp, ok := r.hex4(r.i + 2)
				if !ok {
					return nil, r.errorf("bad \\u escape in string")
				}
				if utf16.IsSurrogate(cp) {
					lo, ok := r.hex4(r.i + 8)
					if !ok || r.b[r.i+6] != '\\' || r.b[r.i+7] != 'u' {
						return nil, r.errorf("lone surrogate in string")
					}
					if cp = utf16.DecodeRune(cp, lo); cp == utf8.RuneError {
						return nil, r.errorf("bad surrogate pair in string")
					}
					r.i += 6
				}
				out = utf8.AppendRune(out, cp)
				r.i += 4
			default:
				return nil, r.errorf("bad escape in string")
			}
			r.i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			r.i++
		default:
			cp, n := utf8.DecodeRune(r.b[r.i:])
			if cp == utf8.RuneError && n == 1 {
				return nil, r.errorf("invalid UTF-8 in string")
			}
			out = append(out, r.b[r.i:r.i+n]...)
			r.i += n
		}
	}
	return nil, r.errorf("unterminated string")
}

// hex4 reads four hex digits at i (which the caller need not have checked
// to be in range).
func (r *reader) hex4(i int) (rune, bool) {
	if i+4 > len(r.b) {
		return 0, false
	}
	var v rune
	for _, c := range r.b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			v = v<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// str reads a non-empty string (attestd never writes an empty one: protojson
// leaves empty fields out).
func (r *reader) str() (string, error) {
	b, err := r.rawString()
	if err != nil {
		return "", err
	}
	if len(b) == 0 {
		return "", errEmpty
	}
	return string(b), nil
}

var errEmpty = errors.New("empty value (the field must be left out)")

// number reads a JSON number as a float64, refusing what protojson refuses
// (out of range).
func (r *reader) number() (float64, error) {
	r.ws()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	switch {
	case r.i < len(r.b) && r.b[r.i] == '0':
		r.i++
	case r.i < len(r.b) && '1' <= r.b[r.i] && r.b[r.i] <= '9':
		r.digits()
	default:
		return 0, r.errorf("bad number")
	}
	if r.i < len(r.b) && r.b[r.i] == '.' {
		r.i++
		if r.digits() == 0 {
			return 0, r.errorf("bad number")
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		r.i++
		if r.i < len(r.b) && (r.b[r.i] == '+' || r.b[r.i] == '-') {
			r.i++
		}
		if r.digits() == 0 {
			return 0, r.errorf("bad number")
		}
	}
	f, err := strconv.ParseFloat(string(r.b[start:r.i]), 64)
	if err != nil {
		return 0, r.errorf("number %s out of range", r.b[start:r.i])
	}
	return f, nil
}

func (r *reader) digits() int {
	n := 0
	for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
		r.i++
		n++
	}
	return n
}

func (r *reader) literal(word string) bool {
	if len(r.b)-r.i >= len(word) && string(r.b[r.i:r.i+len(word)]) == word {
		r.i += len(word)
		return true
	}
	return false
}

// value reads any JSON value as a google.protobuf.Value.
func (r *reader) value() (*structpb.Value, error) {
	switch c := r.peek(); {
	case c == '{':
		s, err := r.structValue()
		if err != nil {
			return nil, err
		}
		return structpb.NewStructValue(s), nil
	case c == '[':
		l := &structpb.ListValue{}
		err := r.array(func() error {
			v, err := r.value()
			l.Values = append(l.Values, v)
			return err
		})
		if err != nil {
			return nil, err
		}
		return structpb.NewListValue(l), nil
	case c == '"':
		b, err := r.rawString()
		if err != nil {
			return nil, err
		}
		return structpb.NewStringValue(string(b)), nil
	case c == 't' && r.literal("true"):
		return structpb.NewBoolValue(true), nil
	case c == 'f' && r.literal("false"):
		return structpb.NewBoolValue(false), nil
	case c == 'n' && r.literal("null"):
		return structpb.NewNullValue(), nil
	case c == '-' || '0' <= c && c <= '9':
		f, err := r.number()
		if err != nil {
			return nil, err
		}
		return structpb.NewNumberValue(f), nil
	default:
		return nil, r.errorf("want a JSON value")
	}
}

// structValue reads an object as a google.protobuf.Struct; duplicate keys
// are an error.
func (r *reader) structValue() (*structpb.Struct, error) {
	s := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	err := r.object(func(key []byte) error {
		if _, dup := s.Fields[string(key)]; dup {
			return fmt.Errorf("duplicate key %q", key)
		}
		k := string(key)
		v, err := r.value()
		if err != nil {
			return err
		}
		s.Fields[k] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}
