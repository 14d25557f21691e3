// Package distribute carries what attestd signs to where consumers look for
// it. This package encodes a signed DSSE envelope (an attestd attestation, a
// statement the environment signed, reference values, image provenance, a
// VSA) as a Sigstore bundle v0.3, decodes one, and verifies one offline with
// the public key alone through sigstore-go: no transparency log, no
// timestamps, no certificates. docs/formats.md describes the form.
package distribute

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/scai"
)

// MediaTypeBundle is the media type of a Sigstore bundle v0.3, the only
// version this package writes or reads.
const MediaTypeBundle = "application/vnd.dev.sigstore.bundle.v0.3+json"

// MaxBundleSize is the largest Sigstore bundle OpenBundle accepts: an
// envelope of scai.MaxEnvelopeSize and room for the verification material.
const MaxBundleSize = scai.MaxEnvelopeSize + 64<<10

// Errors callers branch on; every error of this package wraps one.
var (
	// ErrBundle: the bytes are not a Sigstore bundle of one DSSE envelope
	// signed once, with a public-key hint and nothing else.
	ErrBundle = errors.New("malformed Sigstore bundle")
	// ErrMediaType: the bundle is not version 0.3.
	ErrMediaType = errors.New("unsupported Sigstore bundle media type")
	// ErrKeyHint: the bundle's key hint names none of the keys given, or is
	// not the key the envelope's signature names.
	ErrKeyHint = errors.New("Sigstore bundle key hint names no trusted key")
	// ErrSignature: sigstore-go does not accept the envelope's signature by
	// the key the hint names.
	ErrSignature = errors.New("Sigstore bundle signature does not verify")
)

// KeyHint is the public-key hint attestd writes for pub: the lower-case hex
// SHA-256 of its PKIX (SubjectPublicKeyInfo) DER, the same value as the DSSE
// keyid (scai.KeyID) and an env key's digest in a statement's subject.
func KeyHint(pub crypto.PublicKey) (string, error) {
	hint, err := scai.KeyID(pub)
	if err != nil {
		return "", fmt.Errorf("key hint: %w", err)
	}
	return hint, nil
}

// NewBundle returns env as a Sigstore bundle v0.3 (compact JSON, fields in
// the protobuf order, so one line and the same bytes for the same env) whose
// verification material is pub's KeyHint. env must be an in-toto envelope
// signed once, by pub: that is checked, so a bundle never names a key that
// did not sign it.
func NewBundle(env *dsse.Envelope, pub crypto.PublicKey) ([]byte, error) {
	if env == nil {
		return nil, fmt.Errorf("%w: nil envelope", ErrBundle)
	}
	hint, err := KeyHint(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyHint, err)
	}
	for _, s := range env.Signatures {
		if s.KeyID != "" && s.KeyID != hint {
			return nil, fmt.Errorf("%w: the envelope's signature names key %s, not %s", ErrKeyHint, s.KeyID, hint)
		}
	}
	pe, err := protoEnvelope(env)
	if err != nil {
		return nil, err
	}
	if err := checkEnvelope(pe); err != nil {
		return nil, err
	}
	if err := scai.VerifySignature(env, pub); err != nil {
		return nil, fmt.Errorf("%w: the envelope is not signed by the key %s: %w", ErrSignature, hint, err)
	}
	pb := &protobundle.Bundle{
		MediaType: MediaTypeBundle,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: hint}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: pe},
	}
	out, err := protojson.Marshal(pb)
	if err != nil {
		return nil, fmt.Errorf("%w: marshal: %v", ErrBundle, err)
	}
	// protojson varies its white space from build to build; compacted, the
	// same envelope gives the same bytes (and OCI layer digest) every time.
	var compact bytes.Buffer
	if err := json.Compact(&compact, out); err != nil {
		return nil, fmt.Errorf("%w: compact: %v", ErrBundle, err)
	}
	return compact.Bytes(), nil
}

// OpenBundle parses a Sigstore bundle v0.3 and returns its envelope (in the
// form attestd writes: the signature's keyid is the hint) and key hint. It
// checks the structure only (see ErrBundle; tlog entries and timestamps are
// refused, not ignored), NOT the signature: call VerifyBundle before trusting
// anything returned.
func OpenBundle(raw []byte) (*dsse.Envelope, string, error) {
	pb, err := parse(raw)
	if err != nil {
		return nil, "", err
	}
	hint := pb.GetVerificationMaterial().GetPublicKey().GetHint()
	return dsseEnvelope(pb.GetDsseEnvelope(), hint), hint, nil
}

// VerifyBundle parses a Sigstore bundle v0.3 and has sigstore-go verify its
// envelope's signature, offline, with the key among keys that the bundle's
// hint names. It returns the envelope, whose payload the caller still has to
// appraise (an attestd attestation's env key is inside its statement: pass
// that key).
func VerifyBundle(raw []byte, keys []crypto.PublicKey) (*dsse.Envelope, error) {
	pb, err := parse(raw)
	if err != nil {
		return nil, err
	}
	hint := pb.GetVerificationMaterial().GetPublicKey().GetHint()
	pub, err := keyFor(hint, keys)
	if err != nil {
		return nil, err
	}
	if err := sigstoreVerify(pb, hint, pub); err != nil {
		return nil, err
	}
	return dsseEnvelope(pb.GetDsseEnvelope(), hint), nil
}

// keyFor returns the key among keys whose KeyHint is hint.
func keyFor(hint string, keys []crypto.PublicKey) (crypto.PublicKey, error) {
	for _, k := range keys {
		if h, err := KeyHint(k); err == nil && h == hint {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: hint %s is none of the %d key(s) given", ErrKeyHint, hint, len(keys))
}

// sigstoreVerify has sigstore-go check pb's signature with pub as the only
// trusted key: public-key material, no transparency log, no timestamps, no
// artifact (the DSSE payload is what is signed).
func sigstoreVerify(pb *protobundle.Bundle, hint string, pub crypto.PublicKey) error {
	b, err := sgbundle.NewBundle(pb)
	if err != nil {
		return fmt.Errorf("%w: sigstore-go: %v", ErrBundle, err)
	}
	sv, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return fmt.Errorf("%w: key %s: %v", ErrKeyHint, hint, err)
	}
	trusted := root.NewTrustedPublicKeyMaterial(func(id string) (root.TimeConstrainedVerifier, error) {
		if id != hint {
			return nil, fmt.Errorf("no trusted key %q", id)
		}
		return root.NewExpiringKey(sv, time.Time{}, time.Time{}), nil
	})
	v, err := sgverify.NewVerifier(trusted, sgverify.WithNoObserverTimestamps(), sgverify.WithoutStatementPredicate())
	if err != nil {
		return fmt.Errorf("sigstore-go verifier: %w", err)
	}
	policy := sgverify.NewPolicy(sgverify.WithoutArtifactUnsafe(), sgverify.WithKey())
	if _, err := v.Verify(b, policy); err != nil {
		return fmt.Errorf("%w: key %s: %v", ErrSignature, hint, err)
	}
	return nil
}
