package scai

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

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

// Sign encodes st once (the layout of Encode: protojson's field names, keys
// sorted, no white space) and returns a DSSE envelope (JSON) signed by
// signer over exactly those bytes. signer is the environment key (a TPM-resident
// key in production); ECDSA signatures are ASN.1 DER over SHA-256(PAE), RSA
// ones PKCS #1 v1.5 over SHA-256(PAE). The signature is checked before the
// envelope is returned.
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

// SignPayload returns a DSSE envelope (JSON, payloadType PayloadType) signed
// by signer over exactly payload. The caller has checked that payload is the
// statement it means to sign.
func SignPayload(ctx context.Context, signer crypto.Signer, payload []byte) ([]byte, error) {
	if signer == nil {
		return nil, fmt.Errorf("sign statement: nil signer")
	}
	sv, err := newSignerVerifier(signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	es, err := dsse.NewEnvelopeSigner(sv)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	env, err := es.SignPayload(ctx, PayloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	// A signer that returns the wrong encoding (e.g. raw r‖s) must fail
	// here, not at the verifier.
	if err := VerifySignature(env, signer.Public()); err != nil {
		return nil, fmt.Errorf("sign statement: self-check: %w", err)
	}
	out, err := json.Marshal(env)
	if err != nil {
		return nil, fmt.Errorf("sign statement: marshal envelope: %w", err)
	}
	return out, nil
}

// VerifySignature checks that some signature of env verifies with pub over
// PAE(payloadType, payload). It checks nothing else: the caller must also
// Open the envelope and check that its environment key is pub and that the
// evidence vouches for it.
func VerifySignature(env *dsse.Envelope, pub crypto.PublicKey) error {
	if env == nil {
		return fmt.Errorf("%w: nil envelope", ErrEnvelope)
	}
	sv, err := newSignerVerifier(pub, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSignature, err)
	}
	ev, err := dsse.NewEnvelopeVerifier(sv)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if _, err := ev.Verify(context.Background(), env); err != nil {
		return fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return nil
}

// signerVerifier adapts a crypto.Signer (or just a public key, for
// verification) to dsse.SignerVerifier.
type signerVerifier struct {
	pub    crypto.PublicKey
	signer crypto.Signer // nil when only verifying
	keyID  string
}

func newSignerVerifier(pub crypto.PublicKey, signer crypto.Signer) (*signerVerifier, error) {
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	return &signerVerifier{pub: pub, signer: signer, keyID: id}, nil
}

func (s *signerVerifier) Sign(ctx context.Context, data []byte) ([]byte, error) {
	if s.signer == nil {
		return nil, errors.New("no signer")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d := sha256.Sum256(data)
	return s.signer.Sign(rand.Reader, d[:], crypto.SHA256)
}

func (s *signerVerifier) Verify(_ context.Context, data, sig []byte) error {
	d := sha256.Sum256(data)
	switch k := s.pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, d[:], sig) {
			return errors.New("ECDSA signature does not verify")
		}
		return nil
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], sig)
	default:
		return fmt.Errorf("unsupported key type %T", s.pub)
	}
}

func (s *signerVerifier) KeyID() (string, error) { return s.keyID, nil }

func (s *signerVerifier) Public() crypto.PublicKey { return s.pub }
