// Package tdx is the Intel TDX evidence backend: TD quotes whose REPORTDATA
// carries the attestd binding, with the agent's events extended into RTMR3
// through the kernel's measurement-register interface. Evidence stays in
// Intel's quote encoding (and the firmware's CCEL), so Intel's and Google's
// tools can check it.
//
// Backend is for a TD without a vTPM: the environment key is a software key
// in process memory. Source adds TDX quotes beside another backend's
// evidence (a vTPM), bound to that backend's key. Verifier needs no device.
package tdx

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
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-tdx-guest/client"
	tdxrtmr "github.com/google/go-tdx-guest/rtmr"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// Name is the Evidence.Backend of TDX evidence.
const Name = "tdx"

// Part names of TDX evidence (see docs/formats.md).
const (
	// PartQuote is the raw TD quote (version 4, ECDSA P-256) with its PCK
	// certificate chain, exactly as the quoting enclave produced it.
	PartQuote = "tdx/quote"
	// PartCCEL is the firmware's Confidential Computing Event Log.
	PartCCEL = "tdx/ccel"
	// PartCCELTable is the ACPI CCEL table locating the log.
	PartCCELTable = "tdx/ccel-table"
)

// Media types of TDX evidence parts.
const (
	MediaTypeQuote     = "application/vnd.intel.tdx.quote"
	MediaTypeCCEL      = "application/vnd.tcg.pcclient-eventlog"
	MediaTypeACPITable = "application/vnd.acpi.table"
)

// Default paths of the Linux interfaces.
const (
	DefaultMeasurementsDir = "/sys/class/misc/tdx_guest/measurements"
	DefaultCCELPath        = "/sys/firmware/acpi/tables/data/CCEL"
	DefaultCCELTablePath   = "/sys/firmware/acpi/tables/CCEL"
	legacyRTMRDir          = "/sys/kernel/config/tsm/rtmrs"
)

// AgentRTMR is the register the agent extends: RTMR3, the one left for
// runtime use (RTMR0-2 belong to firmware and boot).
const AgentRTMR = 3

// QuoteProvider returns a raw TD quote for REPORTDATA (go-tdx-guest's
// client.QuoteProvider contract). Production uses configfs-tsm.
type QuoteProvider interface {
	GetRawQuote(reportData [64]byte) ([]byte, error)
}

// RTMRs extends and reads the TD's runtime measurement registers.
type RTMRs interface {
	ExtendRTMR(index int, digest []byte) error
	ReadRTMR(index int) ([]byte, error)
}

// Config selects the quote and register interfaces.
type Config struct {
	// Provider gets quotes (required).
	Provider QuoteProvider
	// RTMRs extends RTMR3 (required for Backend, unused by Source).
	RTMRs RTMRs
	// CCELPath and CCELTablePath are the firmware's event log and its ACPI
	// table; "" means none is shipped. Open sets the Linux defaults.
	CCELPath, CCELTablePath string
}

// Open finds the kernel's TDX quote interface (configfs-tsm, or
// /dev/tdx_guest) and its RTMR interface, and returns a Config for them.
// Without a TDX guest the error wraps attest.ErrNoDevice and names what was
// looked for. A TD whose kernel cannot extend RTMRs gets a Config with nil
// RTMRs: usable as a Source, not as a Backend.
func Open() (Config, error) {
	qp, err := client.GetQuoteProvider()
	if err != nil || qp.IsSupported() != nil {
		if _, derr := os.Stat("/dev/tdx_guest"); derr != nil {
			return Config{}, fmt.Errorf("%w: no TDX guest interface (looked for /sys/kernel/config/tsm/report with provider tdx_guest, and /dev/tdx_guest)", attest.ErrNoDevice)
		}
		return Config{}, fmt.Errorf("%w: /dev/tdx_guest exists but configfs-tsm (/sys/kernel/config/tsm/report) does not offer tdx_guest quotes; mount configfs or use a kernel with TSM reports", attest.ErrNoDevice)
	}
	cfg := Config{Provider: qp}
	if _, err := os.Stat(filepath.Join(DefaultMeasurementsDir, "rtmr3:sha384")); err == nil {
		cfg.RTMRs = SysfsRTMRs{Dir: DefaultMeasurementsDir}
	} else if _, err := os.Stat(legacyRTMRDir); err == nil {
		cfg.RTMRs = configfsRTMRs{}
	}
	if _, err := os.Stat(DefaultCCELPath); err == nil {
		cfg.CCELPath, cfg.CCELTablePath = DefaultCCELPath, DefaultCCELTablePath
	}
	return cfg, nil
}

// ErrNoRTMRInterface: the kernel offers no way to extend RTMR3.
var ErrNoRTMRInterface = errors.New("no TDX RTMR extend interface (looked for " + DefaultMeasurementsDir + "/rtmr3:sha384, Linux 6.16+, and " + legacyRTMRDir + ")")

// SysfsRTMRs is the kernel's measurement-register sysfs interface: each
// rtmrN:sha384 file reads as the register and a 48-byte write extends it.
type SysfsRTMRs struct{ Dir string }

func (s SysfsRTMRs) path(i int) string { return filepath.Join(s.Dir, fmt.Sprintf("rtmr%d:sha384", i)) }

// ExtendRTMR implements RTMRs.
func (s SysfsRTMRs) ExtendRTMR(index int, digest []byte) error {
	f, err := os.OpenFile(s.path(index), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(digest, 0); err != nil {
		return fmt.Errorf("extend %s: %w", s.path(index), err)
	}
	return nil
}

// ReadRTMR implements RTMRs.
func (s SysfsRTMRs) ReadRTMR(index int) ([]byte, error) {
	b, err := os.ReadFile(s.path(index))
	if err != nil {
		return nil, err
	}
	if len(b) != sha512.Size384 {
		return nil, fmt.Errorf("%s holds %d bytes, want %d", s.path(index), len(b), sha512.Size384)
	}
	return b, nil
}

// configfsRTMRs is the older configfs-tsm rtmrs interface (not merged
// upstream, but shipped by some distribution kernels). It cannot be read:
// Read falls back to a quote.
type configfsRTMRs struct{}

func (configfsRTMRs) ExtendRTMR(index int, digest []byte) error {
	c, err := linuxtsm.MakeClient()
	if err != nil {
		return err
	}
	return tdxrtmr.ExtendDigestClient(c, index, digest)
}

func (configfsRTMRs) ReadRTMR(int) ([]byte, error) { return nil, attest.ErrUnsupported }

// reportData is binding ‖ SHA-256(PKIX(env key)) (attest.ReportData).
func reportData(b attest.Binding, keyDigest [32]byte) [64]byte {
	return attest.ReportData(b, keyDigest, nil)
}

// getEvidence quotes rd and adds the CCEL when configured.
func getEvidence(cfg Config, rd [64]byte) (*attest.Evidence, error) {
	raw, err := cfg.Provider.GetRawQuote(rd)
	if err != nil {
		return nil, fmt.Errorf("get TDX quote: %w", err)
	}
	q, err := ParseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("parse own TDX quote: %w", err)
	}
	if !bytes.Equal(q.GetTdQuoteBody().GetReportData(), rd[:]) {
		return nil, errors.New("TDX quote carries other REPORTDATA than requested")
	}
	ev := &attest.Evidence{Backend: Name, Parts: []attest.Part{{Name: PartQuote, MediaType: MediaTypeQuote, Data: raw}}}
	if cfg.CCELPath != "" {
		log, err := os.ReadFile(cfg.CCELPath)
		if err != nil {
			return nil, fmt.Errorf("read CCEL: %w", err)
		}
		table, err := os.ReadFile(cfg.CCELTablePath)
		if err != nil {
			return nil, fmt.Errorf("read CCEL table: %w", err)
		}
		ev.Parts = append(ev.Parts,
			attest.Part{Name: PartCCEL, MediaType: MediaTypeCCEL, Data: log},
			attest.Part{Name: PartCCELTable, MediaType: MediaTypeACPITable, Data: table})
	}
	return ev, nil
}

// Source adds TDX evidence beside another backend's (attest.EvidenceSource).
type Source = attest.KeySource

// NewSource returns a Source vouching for envKey, the other backend's
// environment key.
func NewSource(cfg Config, envKey crypto.PublicKey) (*Source, error) {
	if cfg.Provider == nil {
		return nil, errors.New("tdx: no quote provider")
	}
	return attest.NewKeySource(Name, envKey, func(b attest.Binding, kd [32]byte) (*attest.Evidence, error) {
		return getEvidence(cfg, reportData(b, kd))
	})
}

// Backend is the TDX backend for a TD without a vTPM. The environment key is
// a software ECDSA P-256 key that exists only in this process's memory
// (docs/tee.md); the register is the hardware RTMR3. Methods are safe for
// concurrent use.
type Backend struct {
	cfg       Config
	pub       crypto.PublicKey
	keyDigest [32]byte

	mu     sync.Mutex
	key    *ecdsa.PrivateKey // nil after Close
	closed bool
}

var _ attest.Backend = (*Backend)(nil)

// New makes the environment key. cfg.RTMRs is required.
func New(cfg Config) (*Backend, error) {
	if cfg.Provider == nil {
		return nil, errors.New("tdx: no quote provider")
	}
	if cfg.RTMRs == nil {
		return nil, fmt.Errorf("tdx: %w", ErrNoRTMRInterface)
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

// Register implements attest.Backend: RTMR3.
func (b *Backend) Register() measure.Register {
	return measure.Register{Kind: measure.RTMR, Index: AgentRTMR}
}

// Banks implements attest.Backend: RTMRs are SHA-384.
func (b *Backend) Banks() []crypto.Hash { return []crypto.Hash{crypto.SHA384} }

// Extend implements attest.Backend: one extend of RTMR3.
func (b *Backend) Extend(ctx context.Context, digests map[crypto.Hash][]byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, ok := digests[crypto.SHA384]
	if len(digests) != 1 || !ok || len(d) != sha512.Size384 {
		return fmt.Errorf("extend RTMR%d: need exactly one 48-byte SHA-384 digest", AgentRTMR)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	if err := b.cfg.RTMRs.ExtendRTMR(AgentRTMR, d); err != nil {
		return fmt.Errorf("extend RTMR%d: %w", AgentRTMR, err)
	}
	return nil
}

// Read implements attest.Backend: RTMR3 from the register interface, or
// from a fresh quote where the interface cannot be read.
func (b *Backend) Read(ctx context.Context, bank crypto.Hash) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if bank != crypto.SHA384 {
		return nil, fmt.Errorf("read RTMR%d: bank %v (RTMRs are SHA-384)", AgentRTMR, bank)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	v, err := b.cfg.RTMRs.ReadRTMR(AgentRTMR)
	if !errors.Is(err, attest.ErrUnsupported) {
		return v, err
	}
	raw, err := b.cfg.Provider.GetRawQuote([64]byte{})
	if err != nil {
		return nil, fmt.Errorf("read RTMR%d from a quote: %w", AgentRTMR, err)
	}
	q, err := ParseQuote(raw)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(q.GetTdQuoteBody().GetRtmrs()[AgentRTMR]), nil
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
	return getEvidence(b.cfg, reportData(binding, b.keyDigest))
}

// Close forgets the environment key.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.key = nil
	return nil
}

var errClosed = errors.New("TDX backend closed")

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
