package scai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// Size limits for parsing.
const (
	// MaxEnvelopeSize is the largest envelope ParseEnvelope accepts.
	MaxEnvelopeSize = 16 << 20
	// MaxBundleSize is the largest bundle ParseBundle accepts.
	MaxBundleSize = 128 << 20
)

// ParseEnvelope parses one DSSE envelope (JSON) strictly: at most
// MaxEnvelopeSize bytes, exactly the fields payloadType, payload and
// signatures (each signature: sig and an optional keyid), no duplicates, no
// trailing data, payloadType equal to PayloadType, base64 payload and
// signatures, and at least one signature. It does not verify signatures.
func ParseEnvelope(b []byte) (*dsse.Envelope, error) { return parseEnvelope(b, false) }

// parseEnvelope is ParseEnvelope; with carriers it also accepts the
// unsigned event-log and inclusion-proof lines of a bundle (Carrier).
func parseEnvelope(b []byte, carriers bool) (*dsse.Envelope, error) {
	// An event-log line may be as large as the bundle; it is checked below.
	if len(b) > MaxEnvelopeSize && !carriers {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrEnvelope, len(b), MaxEnvelopeSize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	env := &dsse.Envelope{}
	var seenType, seenPayload, seenSigs bool
	err := decodeObject(dec, func(key string) error {
		switch key {
		case "payloadType":
			seenType = true
			return decodeString(dec, &env.PayloadType)
		case "payload":
			seenPayload = true
			return decodeString(dec, &env.Payload)
		case "signatures":
			seenSigs = true
			return decodeSignatures(dec, env)
		default:
			return fmt.Errorf("unknown field %q", key)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the envelope", ErrEnvelope)
	}
	carrier := carriers && (env.PayloadType == PayloadTypeCEL || env.PayloadType == PayloadTypeInclusionProof)
	switch {
	case !seenType:
		return nil, fmt.Errorf("%w: payloadType missing", ErrEnvelope)
	case !seenPayload:
		return nil, fmt.Errorf("%w: payload missing", ErrEnvelope)
	case !seenSigs || len(env.Signatures) == 0 && !carrier:
		return nil, fmt.Errorf("%w: no signatures", ErrEnvelope)
	}
	if len(b) > MaxEnvelopeSize && env.PayloadType != PayloadTypeCEL {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrEnvelope, len(b), MaxEnvelopeSize)
	}
	if env.PayloadType != PayloadType && !carrier {
		return nil, fmt.Errorf("%w: got %q, want %q", ErrPayloadType, env.PayloadType, PayloadType)
	}
	if p, err := base64.StdEncoding.DecodeString(env.Payload); err != nil || len(p) == 0 {
		return nil, fmt.Errorf("%w: payload is not non-empty standard base64", ErrEnvelope)
	}
	for i, s := range env.Signatures {
		if _, err := base64.StdEncoding.DecodeString(s.Sig); err != nil || s.Sig == "" {
			return nil, fmt.Errorf("%w: signature %d is not non-empty standard base64", ErrEnvelope, i)
		}
	}
	return env, nil
}

// decodePayload decodes the envelope's payload the same way the DSSE library
// does when verifying (standard, then URL-safe base64), so that the bytes
// parsed are the bytes verified.
func decodePayload(env *dsse.Envelope) ([]byte, error) {
	if env.Payload == "" {
		return nil, fmt.Errorf("%w: empty payload", ErrEnvelope)
	}
	p, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrEnvelope, err)
	}
	return p, nil
}

// ParseBundle parses either one envelope (any JSON layout) or an in-toto
// JSON Lines bundle (.intoto.jsonl: one envelope per line, blank lines
// ignored). The input is a bundle if its first non-blank line is a complete
// JSON value. Errors name the 1-based line of the bad envelope.
func ParseBundle(b []byte) ([]*dsse.Envelope, error) {
	if len(b) > MaxBundleSize {
		return nil, fmt.Errorf("%w: bundle of %d bytes exceeds the %d byte limit", ErrEnvelope, len(b), MaxBundleSize)
	}
	lines := bytes.Split(b, []byte("\n"))
	first := -1
	for i, l := range lines {
		if len(bytes.TrimSpace(l)) > 0 {
			first = i
			break
		}
	}
	if first < 0 {
		return nil, fmt.Errorf("%w: empty bundle", ErrEnvelope)
	}
	if !json.Valid(lines[first]) {
		env, err := ParseEnvelope(b)
		if err != nil {
			return nil, err
		}
		return []*dsse.Envelope{env}, nil
	}
	var envs []*dsse.Envelope
	for i, l := range lines {
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		env, err := parseEnvelope(l, true)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		envs = append(envs, env)
	}
	return envs, nil
}

// decodeObject reads one JSON object from dec, calling field for each key
// (which must decode the value). Duplicate keys are an error; keys are
// matched exactly (encoding/json alone would fold case and keep the last
// duplicate).
func decodeObject(dec *json.Decoder, field func(key string) error) error {
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := t.(string)
		if !ok {
			return fmt.Errorf("expected object key, got %v", t)
		}
		if seen[key] {
			return fmt.Errorf("duplicate field %q", key)
		}
		seen[key] = true
		if err := field(key); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return expectDelim(dec, '}')
}

func expectDelim(dec *json.Decoder, d json.Delim) error {
	t, err := dec.Token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if got, ok := t.(json.Delim); !ok || got != d {
		return fmt.Errorf("expected %q, got %v", d, t)
	}
	return nil
}

func decodeString(dec *json.Decoder, dst *string) error {
	t, err := dec.Token()
	if err != nil {
		return err
	}
	s, ok := t.(string)
	if !ok {
		return fmt.Errorf("expected a string, got %v", t)
	}
	*dst = s
	return nil
}

func decodeSignatures(dec *json.Decoder, env *dsse.Envelope) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		var s dsse.Signature
		var seenSig bool
		err := decodeObject(dec, func(key string) error {
			switch key {
			case "keyid":
				return decodeString(dec, &s.KeyID)
			case "sig":
				seenSig = true
				return decodeString(dec, &s.Sig)
			default:
				return fmt.Errorf("unknown field %q", key)
			}
		})
		if err != nil {
			return fmt.Errorf("signature %d: %w", len(env.Signatures), err)
		}
		if !seenSig {
			return fmt.Errorf("signature %d: sig missing", len(env.Signatures))
		}
		env.Signatures = append(env.Signatures, s)
	}
	return expectDelim(dec, ']')
}
