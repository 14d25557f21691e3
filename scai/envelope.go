package scai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"

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
	env := &dsse.Envelope{}
	var seen [3]bool
	r := &reader{b: b}
	err := r.fields("envelope", []string{"payloadType", "payload", "signatures"}, func(i int) (err error) {
		seen[i] = true
		switch i {
		case 0:
			env.PayloadType, err = r.str()
		case 1:
			env.Payload, err = r.str()
		default:
			err = r.array(func() error {
				var sig dsse.Signature
				var seenSig bool
				err := r.fields("signature", []string{"keyid", "sig"}, func(j int) (err error) {
					if j == 0 {
						sig.KeyID, err = r.str()
						return err
					}
					seenSig = true
					sig.Sig, err = r.str()
					return err
				})
				if err != nil {
					return fmt.Errorf("signature %d: %w", len(env.Signatures), err)
				}
				if !seenSig {
					return fmt.Errorf("signature %d: sig missing", len(env.Signatures))
				}
				env.Signatures = append(env.Signatures, sig)
				return nil
			})
		}
		return err
	})
	if err == nil {
		err = r.end()
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvelope, err)
	}
	seenType, seenPayload, seenSigs := seen[0], seen[1], seen[2]
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
