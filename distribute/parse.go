package distribute

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/scai"
)

// parse decodes raw strictly (protojson: no unknown or duplicate fields, no
// trailing data) and checks that it is what NewBundle writes: media type
// v0.3, a public-key hint and no other verification material, one DSSE
// envelope of an in-toto statement signed once.
func parse(raw []byte) (*protobundle.Bundle, error) {
	if len(raw) > MaxBundleSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrBundle, len(raw), MaxBundleSize)
	}
	pb := &protobundle.Bundle{}
	if err := protojson.Unmarshal(raw, pb); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBundle, err)
	}
	if pb.GetMediaType() != MediaTypeBundle {
		return nil, fmt.Errorf("%w: %q, want %q", ErrMediaType, pb.GetMediaType(), MediaTypeBundle)
	}
	if err := checkMaterial(pb.GetVerificationMaterial()); err != nil {
		return nil, err
	}
	pe := pb.GetDsseEnvelope()
	if pe == nil {
		return nil, fmt.Errorf("%w: content is not a DSSE envelope", ErrBundle)
	}
	if err := checkEnvelope(pe); err != nil {
		return nil, err
	}
	return pb, nil
}

// checkMaterial requires a public-key hint as attestd writes it (KeyHint) and
// nothing else: attestd verifies offline with a key it already trusts, so it
// refuses certificates, transparency-log entries and timestamps rather than
// ignore them.
func checkMaterial(vm *protobundle.VerificationMaterial) error {
	switch {
	case vm == nil:
		return fmt.Errorf("%w: no verification material", ErrBundle)
	case vm.GetPublicKey() == nil:
		return fmt.Errorf("%w: verification material is not a public-key hint", ErrBundle)
	case len(vm.GetTlogEntries()) > 0:
		return fmt.Errorf("%w: %d transparency-log entries (attestd verifies offline and checks none)", ErrBundle, len(vm.GetTlogEntries()))
	case vm.GetTimestampVerificationData() != nil:
		return fmt.Errorf("%w: timestamp verification data (attestd verifies offline and checks none)", ErrBundle)
	}
	hint := vm.GetPublicKey().GetHint()
	if b, err := hex.DecodeString(hint); err != nil || len(b) != 32 || hex.EncodeToString(b) != hint {
		return fmt.Errorf("%w: hint %q is not 64 lower-case hex digits (SHA-256 of the key's PKIX DER)", ErrKeyHint, hint)
	}
	return nil
}

// checkEnvelope requires an in-toto payload and exactly one signature (as
// Sigstore does) with no keyid: the hint names the key. (sigstore-go's DSSE
// verifier skips a signature whose keyid is not its own key ID, an SSH
// fingerprint, so a keyid would only make a good bundle fail.)
func checkEnvelope(pe *protodsse.Envelope) error {
	if pe.GetPayloadType() != scai.PayloadType {
		return fmt.Errorf("%w: %w: got %q, want %q", ErrBundle, scai.ErrPayloadType, pe.GetPayloadType(), scai.PayloadType)
	}
	if len(pe.GetPayload()) == 0 {
		return fmt.Errorf("%w: empty payload", ErrBundle)
	}
	if n := len(pe.GetSignatures()); n != 1 {
		return fmt.Errorf("%w: %d signatures, want 1", ErrBundle, n)
	}
	sig := pe.GetSignatures()[0]
	if len(sig.GetSig()) == 0 {
		return fmt.Errorf("%w: empty signature", ErrBundle)
	}
	if id := sig.GetKeyid(); id != "" {
		return fmt.Errorf("%w: the signature has keyid %q (the key hint names the key)", ErrBundle, id)
	}
	return nil
}

// protoEnvelope converts env to the protobuf form, decoding its base64. The
// signatures' keyids are dropped: NewBundle has checked them against the hint.
func protoEnvelope(env *dsse.Envelope) (*protodsse.Envelope, error) {
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrBundle, err)
	}
	pe := &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType}
	for i, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			return nil, fmt.Errorf("%w: signature %d is not standard base64", ErrBundle, i)
		}
		pe.Signatures = append(pe.Signatures, &protodsse.Signature{Sig: sig})
	}
	return pe, nil
}

// dsseEnvelope converts a checked protobuf envelope back to the JSON form
// attestd writes (standard base64, the signature's keyid the key hint), as
// scai reads it.
func dsseEnvelope(pe *protodsse.Envelope, hint string) *dsse.Envelope {
	env := &dsse.Envelope{
		PayloadType: pe.GetPayloadType(),
		Payload:     base64.StdEncoding.EncodeToString(pe.GetPayload()),
	}
	for _, s := range pe.GetSignatures() {
		env.Signatures = append(env.Signatures, dsse.Signature{KeyID: hint, Sig: base64.StdEncoding.EncodeToString(s.GetSig())})
	}
	return env
}
