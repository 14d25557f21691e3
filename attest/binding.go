package attest

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
)

// Purpose says what a binding is for; it is hashed into the binding so
// evidence made for one purpose cannot be replayed for another.
type Purpose string

// Purposes.
const (
	PurposeLaunch   Purpose = "launch"
	PurposeAttest   Purpose = "attest"
	PurposeDispatch Purpose = "dispatch"
	PurposeComplete Purpose = "complete"
)

// bindingDomain separates attestd bindings from any other use of the key.
const bindingDomain = "attestd binding v1"

// Binding is the 32-byte value placed in a TPM quote's qualifying data. TEE
// reports carry it in the first half of REPORT_DATA (ReportData).
type Binding [32]byte

// KeyDigest is SHA-256 over the PKIX (SubjectPublicKeyInfo) DER encoding of
// an environment public key. It is also the statement subject's digest.
func KeyDigest(pub crypto.PublicKey) ([32]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return [32]byte{}, fmt.Errorf("marshal public key: %w", err)
	}
	return sha256.Sum256(der), nil
}

// Bind computes the binding for purpose over the env key digest and data:
//
//	SHA-256( "attestd binding v1" ‖ 0x00 ‖ u16be(len(purpose)) ‖ purpose ‖ keyDigest ‖ SHA-256(data) )
//
// data is the verifier nonce for PurposeAttest, and purpose-specific bytes
// for the others (see docs/formats.md).
func Bind(purpose Purpose, keyDigest [32]byte, data []byte) Binding {
	h := sha256.New()
	h.Write([]byte(bindingDomain))
	h.Write([]byte{0})
	var n [2]byte
	binary.BigEndian.PutUint16(n[:], uint16(len(purpose)))
	h.Write(n[:])
	h.Write([]byte(purpose))
	h.Write(keyDigest[:])
	d := sha256.Sum256(data)
	h.Write(d[:])
	var b Binding
	copy(b[:], h.Sum(nil))
	return b
}

// reportDataDomain separates the register commitment in REPORT_DATA[32:]
// from a plain key digest.
const reportDataDomain = "attestd snp software rtmr3 v1"

// ReportData is the 64-byte REPORT_DATA of SEV-SNP reports and TDX quotes:
//
//	binding ‖ keyDigest                                             (register == nil)
//	binding ‖ SHA-256("attestd snp software rtmr3 v1" ‖ keyDigest ‖ register)
//
// The second half lets a verifier see which env key the hardware vouched
// for without knowing the purpose or nonce; the register form also commits
// to a software-kept register where the TEE has no runtime register of its
// own (SEV-SNP). See docs/formats.md.
func ReportData(b Binding, keyDigest [32]byte, register []byte) [64]byte {
	var rd [64]byte
	copy(rd[:], b[:])
	if register == nil {
		copy(rd[32:], keyDigest[:])
		return rd
	}
	h := sha256.New()
	h.Write([]byte(reportDataDomain))
	h.Write(keyDigest[:])
	h.Write(register)
	copy(rd[32:], h.Sum(nil))
	return rd
}

// CheckNonce returns ErrNonceSize unless 1 <= len(nonce) <= MaxNonceSize.
func CheckNonce(nonce []byte) error {
	if len(nonce) == 0 || len(nonce) > MaxNonceSize {
		return fmt.Errorf("%w (got %d bytes)", ErrNonceSize, len(nonce))
	}
	return nil
}

// MaxBuildIDSize bounds a build ID (bytes).
const MaxBuildIDSize = 256

// ErrBuildID: a build ID is empty, too long or not printable ASCII.
var ErrBuildID = errors.New("build ID must be 1 to 256 printable ASCII characters")

// CheckBuildID returns ErrBuildID unless id is 1..MaxBuildIDSize printable
// ASCII characters (0x21..0x7e: no spaces, no control characters).
func CheckBuildID(id string) error {
	if len(id) == 0 || len(id) > MaxBuildIDSize {
		return fmt.Errorf("%w (got %d bytes)", ErrBuildID, len(id))
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return fmt.Errorf("%w (byte %d is 0x%02x)", ErrBuildID, i, id[i])
		}
	}
	return nil
}

// BuildData is the binding data of PurposeDispatch and PurposeComplete:
//
//	u16be(len(buildID)) ‖ buildID ‖ digest ‖ nonce
//
// where digest is the build request digest (dispatch) or the inputs/outputs
// digest (complete), and nonce is the verifier's nonce, possibly empty.
func BuildData(buildID string, digest [32]byte, nonce []byte) []byte {
	out := make([]byte, 0, 2+len(buildID)+32+len(nonce))
	out = binary.BigEndian.AppendUint16(out, uint16(len(buildID)))
	out = append(out, buildID...)
	out = append(out, digest[:]...)
	return append(out, nonce...)
}
