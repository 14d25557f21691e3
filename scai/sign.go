package scai

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// KeyID is the DSSE keyid attestd uses for pub: the lower-case hex of
// attest.KeyDigest(pub), i.e. the statement subject's sha256 digest.
func KeyID(pub crypto.PublicKey) (string, error) {
	_, kd, err := encodeKey(pub)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(kd[:]), nil
}

// Sign encodes st once (the layout Encode writes: protojson's field names,
// keys sorted, no white space) and returns a DSSE envelope (JSON) signed by
// signer over exactly those bytes. signer is the environment key (a
// TPM-resident key in production); ECDSA signatures are ASN.1 DER over
// SHA-256(PAE), RSA ones PKCS #1 v1.5 over SHA-256(PAE). The signature is
// checked before the envelope is returned. Encode and SignPayload give the
// same envelope for less work.
func Sign(ctx context.Context, signer crypto.Signer, st *ita.Statement) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("sign statement: nil signer")
	}
	if st == nil {
		return nil, fmt.Errorf("sign statement: nil statement")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	payload, err := encodeStatement(st)
	if err != nil {
		return nil, fmt.Errorf("sign statement: marshal: %w", err)
	}
	return SignPayload(ctx, signer, payload)
}

// CheckedSigner is a signer that verifies every signature it returns against
// its public key (the TPM backend's env key does: a TPM's answer is checked
// before use). SignPayload does not check such a signature again.
type CheckedSigner interface {
	crypto.Signer
	ChecksSignatures()
}

// SignPayload returns a DSSE envelope (JSON, payloadType PayloadType) signed
// by signer over exactly payload. The caller has checked that payload is the
// statement it means to sign (Encode does). The signature is checked before
// the envelope is returned, unless signer is a CheckedSigner.
func SignPayload(ctx context.Context, signer crypto.Signer, payload []byte) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("sign statement: nil signer")
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	pub := signer.Public()
	keyID, err := KeyID(pub)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	d := paeDigest(PayloadType, payload)
	sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	// A signer that returns the wrong encoding (e.g. raw r‖s) must fail
	// here, not at the verifier, unless it checks its signatures itself.
	if _, checked := signer.(CheckedSigner); !checked {
		if err := verifyDigest(pub, d[:], sig); err != nil {
			return nil, fmt.Errorf("sign statement: self-check: %w: %v", ErrSignature, err)
		}
	}
	return envelopeJSON(PayloadType, payload, keyID, sig), nil
}

// paeDigest is SHA-256(PAE(payloadType, payload)), hashed without copying
// the payload.
func paeDigest(payloadType string, payload []byte) [32]byte {
	h := sha256.New()
	var hdr []byte
	hdr = append(hdr, "DSSEv1 "...)
	hdr = strconv.AppendInt(hdr, int64(len(payloadType)), 10)
	hdr = append(hdr, ' ')
	hdr = append(hdr, payloadType...)
	hdr = append(hdr, ' ')
	hdr = strconv.AppendInt(hdr, int64(len(payload)), 10)
	hdr = append(hdr, ' ')
	h.Write(hdr)
	h.Write(payload)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// envelopeJSON writes the envelope as encoding/json writes a dsse.Envelope
// with one signature.
func envelopeJSON(payloadType string, payload []byte, keyID string, sig []byte) []byte {
	b64 := base64.StdEncoding
	out := make([]byte, 0, 96+len(payloadType)+b64.EncodedLen(len(payload))+len(keyID)+b64.EncodedLen(len(sig)))
	out = append(out, `{"payloadType":`...)
	out, _ = appendString(out, payloadType) // a constant, valid UTF-8
	out = append(out, `,"payload":"`...)
	out = b64.AppendEncode(out, payload)
	out = append(out, `","signatures":[{"keyid":"`...)
	out = append(out, keyID...) // lower-case hex
	out = append(out, `","sig":"`...)
	out = b64.AppendEncode(out, sig)
	return append(out, `"}]}`...)
}

// VerifySignature checks that some signature of env verifies with pub over
// PAE(payloadType, payload). It checks nothing else: the caller must also
// Open the envelope and check that its environment key is pub and that the
// evidence vouches for it.
//
// It decides as go-securesystemslib's dsse.EnvelopeVerifier with the one key
// pub does (payload and signatures in standard or URL-safe base64; a
// signature whose keyid is set and differs from KeyID(pub) is skipped; a
// signature that is not base64 fails the envelope), hashing the PAE without
// copying the payload.
func VerifySignature(env *dsse.Envelope, pub crypto.PublicKey) error {
	if env == nil {
		return fmt.Errorf("%w: nil envelope", ErrEnvelope)
	}
	keyID, err := KeyID(pub)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if len(env.Signatures) == 0 {
		return fmt.Errorf("%w: no signature found", ErrSignature)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	d := paeDigest(env.PayloadType, payload)
	ok := false
	for i, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			if sig, err = base64.URLEncoding.DecodeString(s.Sig); err != nil {
				return fmt.Errorf("%w: signature %d is not base64", ErrSignature, i)
			}
		}
		if ok || s.KeyID != "" && s.KeyID != keyID {
			continue
		}
		ok = verifyDigest(pub, d[:], sig) == nil
	}
	if !ok {
		return fmt.Errorf("%w: no signature verifies with key %s", ErrSignature, keyID)
	}
	return nil
}

// verifyDigest checks sig over a SHA-256 digest: ECDSA ASN.1 DER or RSA
// PKCS #1 v1.5.
func verifyDigest(pub crypto.PublicKey, d, sig []byte) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d, sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, d, sig)
	default:
		return fmt.Errorf("unsupported key type %T", pub)
	}
}
