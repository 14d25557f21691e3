// Package attest defines what every evidence backend (TPM, SEV-SNP, TDX)
// offers the agent and the verifier: producing evidence bound to an
// environment key, extending the agent's measurement register, and checking
// evidence authenticity. It holds the one function that computes the binding
// placed into a quote's qualifying data or a report's REPORT_DATA.
package attest

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/attestd/attestd/measure"
)

// Sentinel errors callers branch on.
var (
	// ErrNonceSize: a caller nonce is empty or longer than MaxNonceSize.
	ErrNonceSize = errors.New("nonce must be 1 to 64 bytes")
	// ErrNoDevice: no evidence device (TPM, TEE) could be opened.
	ErrNoDevice = errors.New("no attestation device found")
	// ErrDeviceFailed: the evidence device stopped answering correctly (no
	// answer within its deadline, an I/O error, a response that does not
	// check out). Its state is unknown from then on: every later call fails
	// the same way, and the daemon exits so that it is restarted.
	ErrDeviceFailed = errors.New("attestation device failed")
	// ErrMissingPart: evidence lacks a part the verifier needs.
	ErrMissingPart = errors.New("evidence part missing")
	// ErrUnsupported: the backend cannot do what was asked.
	ErrUnsupported = errors.New("not supported by this backend")
	// ErrChallenge: an AK registration (credential) challenge the device
	// cannot open: malformed, or made for another EK or AK.
	ErrChallenge = errors.New("credential challenge does not open with this TPM's EK and AK")
)

// MaxNonceSize is the largest caller nonce accepted (bytes).
const MaxNonceSize = 64

// Part is one piece of evidence in its standard encoding, e.g. a raw
// TPMS_ATTEST or an SNP report. Name is stable and unique within one
// Evidence (see docs/formats.md for the names each backend uses).
type Part struct {
	Name      string
	MediaType string
	Data      []byte
}

// Evidence is what a backend produced for one binding.
type Evidence struct {
	// Backend names the producing backend ("tpm", "snp", "tdx").
	Backend string
	Parts   []Part
}

// Part returns the part called name.
func (e *Evidence) Part(name string) (Part, bool) { return FindPart(e.Parts, name) }

// FindPart returns the part called name among parts.
func FindPart(parts []Part, name string) (Part, bool) {
	for _, p := range parts {
		if p.Name == name {
			return p, true
		}
	}
	return Part{}, false
}

// MustPart returns the data of the part called name, or an error wrapping
// ErrMissingPart.
func (e *Evidence) MustPart(name string) ([]byte, error) {
	p, ok := e.Part(name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrMissingPart, name)
	}
	return p.Data, nil
}

// Backend produces evidence inside the environment. Implementations are not
// required to be safe for concurrent use; the agent serialises calls.
type Backend interface {
	// Name is the backend's short name, used as Evidence.Backend.
	Name() string
	// Register is the register Extend writes to.
	Register() measure.Register
	// Banks lists the hash algorithms Extend expects a digest for, in order.
	Banks() []crypto.Hash
	// Extend extends the agent register with one digest per bank.
	Extend(ctx context.Context, digests map[crypto.Hash][]byte) error
	// Read returns the agent register's current value in bank. The agent
	// uses it at start to tell a restart in the same boot (register matches
	// the event log) from a new boot (register reset).
	Read(ctx context.Context, bank crypto.Hash) ([]byte, error)
	// Signer is the per-environment key. Its private part never leaves the
	// device where the backend has one (TPM).
	Signer() crypto.Signer
	// Evidence returns fresh evidence whose qualifying data / report data is
	// binding and which vouches for Signer's public key.
	Evidence(ctx context.Context, binding Binding) (*Evidence, error)
	// Close releases keys and devices.
	Close() error
}

// EvidenceSource produces additional evidence for the same binding, e.g. a
// TEE report beside a vTPM quote. The agent puts each source's evidence into
// the same attestation as the backend's, all bound to the backend's env key.
type EvidenceSource interface {
	// Name is the source's short name, used as Evidence.Backend.
	Name() string
	// Evidence returns fresh evidence whose report data is binding.
	Evidence(ctx context.Context, binding Binding) (*Evidence, error)
}

// VerifyOptions is what a backend verifier needs besides the evidence. The
// zero value trusts nothing.
type VerifyOptions struct {
	// Binding is the expected qualifying data / report data.
	Binding Binding
	// EnvKey is the key that signed the envelope carrying the evidence; the
	// evidence must vouch for exactly this key.
	EnvKey crypto.PublicKey
	// TrustedAKs pins attestation keys by public key.
	TrustedAKs []crypto.PublicKey
	// AKRoots are roots for AK certificates shipped in the evidence.
	AKRoots *x509.CertPool
	// InsecureTrustEmbeddedAK accepts the AK shipped in the evidence without
	// any anchor. Only for demos and tests.
	InsecureTrustEmbeddedAK bool
}

// Check is one named verification step and its outcome. A skipped check
// (Skip) was not run, by an explicit choice the Detail names: it neither
// passed nor failed, and its OK is false.
type Check struct {
	Name   string `json:"check"`
	OK     bool   `json:"ok"`
	Skip   bool   `json:"skipped,omitempty"`
	Detail string `json:"detail"`
}

// Skipped is a check not run, for the reason detail gives.
func Skipped(name, detail string) Check { return Check{Name: name, Skip: true, Detail: detail} }

// Failed reports whether the check ran and failed.
func (c Check) Failed() bool { return !c.OK && !c.Skip }

// Result is "passed", "failed" or "skipped".
func (c Check) Result() string {
	switch {
	case c.Skip:
		return "skipped"
	case c.OK:
		return "passed"
	}
	return "failed"
}

// MarshalJSON adds "result" (Result) to the fields.
func (c Check) MarshalJSON() ([]byte, error) {
	type plain Check
	return json.Marshal(struct {
		plain
		Result string `json:"result"`
	}{plain(c), c.Result()})
}

// Claims are what authentic evidence establishes.
type Claims struct {
	// Bank is the hash algorithm of Registers.
	Bank crypto.Hash
	// Registers maps register (kind + index) to its quoted value.
	Registers map[measure.Register][]byte
	// Hardware: the evidence is rooted in hardware the verifier trusts as
	// such (a TEE without debug whose platform TCB was checked, or a TPM the
	// verifier declares a hardware TPM), not in a component the host
	// controls. SLSA BuildEnv L3 needs it (docs/verifying.md).
	Hardware bool
	// FirmwareLog is the platform firmware's TCG event log when it replayed
	// to the quoted registers (nil: none was given, or the backend has
	// none): the events of those registers are authenticated.
	FirmwareLog []byte
}

// Verifier checks evidence of one backend. It never reads policy beyond opts
// and never does network I/O.
type Verifier interface {
	// Backend is the Evidence.Backend this verifier handles.
	Backend() string
	// Verify runs every check it can and returns them all, in order; claims
	// are non-nil only when every check passed.
	Verify(ev *Evidence, opts VerifyOptions) (*Claims, []Check)
}
