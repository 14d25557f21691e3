// Package snp is the AMD SEV-SNP evidence backend: attestation reports from
// the guest's AMD secure processor whose REPORT_DATA carries the attestd
// binding. Every evidence part is in AMD's own encoding so AMD's tools
// (snpguest, go-sev-guest) can check it.
//
// It offers two roles (docs/tee.md): Backend, for a confidential VM without
// a vTPM, holds the environment key in process memory and keeps a software
// register (SNP has no runtime measurement register); Source adds SNP
// reports beside another backend's evidence (a vTPM), bound to that
// backend's key. Verifier checks evidence of both roles and needs no device.
package snp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// Name is the Evidence.Backend of SNP evidence.
const Name = "snp"

// Part names of SNP evidence (see docs/formats.md).
const (
	// PartReport is the raw 1184-byte ATTESTATION_REPORT (SEV-SNP ABI
	// spec, table "ATTESTATION_REPORT Structure").
	PartReport = "snp/report"
	// PartVCEK is the DER VCEK certificate that signed the report, from the
	// host's certificate table or a local file.
	PartVCEK = "snp/vcek"
	// PartVLEK is the DER VLEK certificate, when a VLEK signed the report.
	PartVLEK = "snp/vlek"
	// PartRegister is the 48-byte value of the software register (Backend
	// role only); REPORT_DATA[32:64] commits to it.
	PartRegister = "snp/software-rtmr3"
)

// Media types of SNP evidence parts.
const (
	MediaTypeReport   = "application/vnd.amd.sev-snp.attestation-report"
	MediaTypeCert     = "application/pkix-cert"
	MediaTypeRegister = "application/vnd.attestd.sha384-register"
)

// QuoteProvider returns a raw report for REPORT_DATA, optionally followed by
// the host's certificate table (the go-sev-guest client.QuoteProvider
// contract). Production uses the kernel's; tests inject snptest's.
type QuoteProvider interface {
	GetRawQuote(reportData [64]byte) ([]byte, error)
}

// softwareRegister is the register index the Backend role claims: it
// emulates TDX's RTMR3 (SHA-384) so the agent's CEL is the same on both.
var softwareRegister = measure.Register{Kind: measure.RTMR, Index: 3}

// reportData is REPORT_DATA for a binding (attest.ReportData): with the
// key digest (Source) or with the software register (Backend).
func reportData(b attest.Binding, keyDigest [32]byte, register []byte) [64]byte {
	return attest.ReportData(b, keyDigest, register)
}

// Config selects how reports are obtained.
type Config struct {
	// Provider gets reports. nil means the kernel's: configfs-tsm
	// (/sys/kernel/config/tsm/report), then /dev/sev-guest.
	Provider QuoteProvider
	// VCEK is a DER VCEK (or VLEK) certificate shipped with every report
	// when the host's certificate table has none, e.g. one fetched from
	// AMD's KDS when the image was baked. nil: ship what the host gives.
	VCEK []byte
}

// Open finds the kernel's SEV-SNP report interface. When there is none the
// error wraps attest.ErrNoDevice and names what was looked for.
func Open() (QuoteProvider, error) {
	qp, err := client.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("%w: no SEV-SNP guest interface (looked for /sys/kernel/config/tsm/report with provider sev_guest, and /dev/sev-guest)", attest.ErrNoDevice)
	}
	return qp, nil
}

// Source adds SNP evidence beside another backend's (attest.EvidenceSource):
// REPORT_DATA = binding ‖ SHA-256(PKIX(env key)) of that backend's key.
type Source = attest.KeySource

// NewSource returns a Source vouching for envKey, the other backend's
// environment key.
func NewSource(cfg Config, envKey crypto.PublicKey) (*Source, error) {
	if cfg.Provider == nil {
		return nil, errors.New("snp: no quote provider")
	}
	return attest.NewKeySource(Name, envKey, func(b attest.Binding, kd [32]byte) (*attest.Evidence, error) {
		return getEvidence(cfg, reportData(b, kd, nil), nil)
	})
}

// getEvidence asks the provider for a report and splits it into parts.
func getEvidence(cfg Config, rd [64]byte, register []byte) (*attest.Evidence, error) {
	raw, err := cfg.Provider.GetRawQuote(rd)
	if err != nil {
		return nil, fmt.Errorf("get SEV-SNP report: %w", err)
	}
	att, err := abi.ReportCertsToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("parse own SEV-SNP report: %w", err)
	}
	if !bytes.Equal(att.GetReport().GetReportData(), rd[:]) {
		return nil, errors.New("SEV-SNP report carries other REPORT_DATA than requested")
	}
	ev := &attest.Evidence{Backend: Name}
	ev.Parts = append(ev.Parts, attest.Part{Name: PartReport, MediaType: MediaTypeReport, Data: bytes.Clone(raw[:abi.ReportSize])})
	info, err := abi.ParseSignerInfo(att.GetReport().GetSignerInfo())
	if err != nil {
		return nil, fmt.Errorf("parse own SEV-SNP report: %w", err)
	}
	chain := att.GetCertificateChain()
	switch {
	case info.SigningKey == abi.VlekReportSigner && len(chain.GetVlekCert()) > 0:
		ev.Parts = append(ev.Parts, attest.Part{Name: PartVLEK, MediaType: MediaTypeCert, Data: bytes.Clone(chain.GetVlekCert())})
	case info.SigningKey == abi.VcekReportSigner && len(chain.GetVcekCert()) > 0:
		ev.Parts = append(ev.Parts, attest.Part{Name: PartVCEK, MediaType: MediaTypeCert, Data: bytes.Clone(chain.GetVcekCert())})
	case cfg.VCEK != nil:
		name := PartVCEK
		if info.SigningKey == abi.VlekReportSigner {
			name = PartVLEK
		}
		ev.Parts = append(ev.Parts, attest.Part{Name: name, MediaType: MediaTypeCert, Data: bytes.Clone(cfg.VCEK)})
	}
	if register != nil {
		ev.Parts = append(ev.Parts, attest.Part{Name: PartRegister, MediaType: MediaTypeRegister, Data: bytes.Clone(register)})
	}
	return ev, nil
}

// Backend is the SEV-SNP backend for a confidential VM without a vTPM. Its
// environment key is a software ECDSA P-256 key that exists only in this
// process's memory; its register is a software SHA-384 register whose value
// each report commits to. Neither is hardware-protected against this process
// (docs/tee.md). Methods are safe for concurrent use.
type Backend struct {
	cfg       Config
	pub       crypto.PublicKey
	keyDigest [32]byte

	mu       sync.Mutex
	key      *ecdsa.PrivateKey // nil after Close
	register [sha512.Size384]byte
	closed   bool
}

var _ attest.Backend = (*Backend)(nil)

// New makes the environment key and an all-zero register.
func New(cfg Config) (*Backend, error) {
	if cfg.Provider == nil {
		return nil, errors.New("snp: no quote provider")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate environment key: %w", err)
	}
	kd, err := attest.KeyDigest(key.Public())
	if err != nil {
		return nil, err
	}
	return &Backend{cfg: cfg, key: key, pub: key.Public(), keyDigest: kd}, nil
}

// Name implements attest.Backend.
func (b *Backend) Name() string { return Name }

// Register implements attest.Backend: the software register, named RTMR3
// because it plays that role (SNP has no RTMRs).
func (b *Backend) Register() measure.Register { return softwareRegister }

// Banks implements attest.Backend: SHA-384 only.
func (b *Backend) Banks() []crypto.Hash { return []crypto.Hash{crypto.SHA384} }

// Extend implements attest.Backend: register = SHA-384(register ‖ digest),
// in memory. The next report commits to the new value.
func (b *Backend) Extend(ctx context.Context, digests map[crypto.Hash][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, ok := digests[crypto.SHA384]
	if len(digests) != 1 || !ok || len(d) != sha512.Size384 {
		return fmt.Errorf("extend software RTMR3: need exactly one 48-byte SHA-384 digest")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	b.register = sha512.Sum384(append(b.register[:], d...))
	return nil
}

// Read implements attest.Backend.
func (b *Backend) Read(ctx context.Context, bank crypto.Hash) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if bank != crypto.SHA384 {
		return nil, fmt.Errorf("read software RTMR3: bank %v not kept (SHA-384 only)", bank)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.register[:]), nil
}

// Signer implements attest.Backend: the in-memory environment key.
func (b *Backend) Signer() crypto.Signer { return (*keySigner)(b) }

// Evidence implements attest.Backend.
func (b *Backend) Evidence(ctx context.Context, binding attest.Binding) (*attest.Evidence, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	reg := b.register[:]
	return getEvidence(b.cfg, reportData(binding, b.keyDigest, reg), reg)
}

// Close forgets the environment key.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.key = nil // the only reference: the key becomes garbage
	return nil
}

var errClosed = errors.New("SEV-SNP backend closed")

type keySigner Backend

func (s *keySigner) Public() crypto.PublicKey { return s.pub }

func (s *keySigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errClosed
	}
	return s.key.Sign(r, digest, opts)
}
