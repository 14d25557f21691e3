// Package snptest is a fake SEV-SNP guest for tests: it signs real reports
// with go-sev-guest's test-only AMD chain (ARK → ASK → VCEK) for any
// REPORT_DATA, behind the same QuoteProvider interface the real backend uses.
//
// Test-only: it imports go-sev-guest/testing (which registers flags) and
// must never be linked into the binaries (internal/archtest checks).
package snptest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-sev-guest/abi"
	sevtest "github.com/google/go-sev-guest/testing"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/attestd/attestd/attest/snp"
)

// ProductLine is the fake chain's product line.
const ProductLine = "Milan"

// milanCPUID1EAX is a Milan (family 19h, model 01h) CPUID_1_EAX, so
// version-3 reports name their product.
const milanCPUID1EAX = 0x00A00F11

// DefaultMeasurement is the launch measurement fake reports carry.
var DefaultMeasurement = [48]byte{0x5e, 0x5e, 0x5e}

// Device is a fake SEV-SNP guest. Its fields may be changed between reports
// to make bad ones. Safe for concurrent use.
type Device struct {
	mu          sync.Mutex
	signer      *sevtest.AmdSigner
	certs       []byte
	Measurement [48]byte
	Debug       bool
	// NoCerts leaves the certificate table out (a host that provides none).
	NoCerts bool
}

// New makes a fake AMD chain valid from created on.
func New(created time.Time) (*Device, error) {
	s, err := sevtest.DefaultTestOnlyCertChain(ProductLine, created)
	if err != nil {
		return nil, fmt.Errorf("fake AMD chain: %w", err)
	}
	certs, err := s.CertTableBytes()
	if err != nil {
		return nil, fmt.Errorf("fake certificate table: %w", err)
	}
	return &Device{signer: s, certs: certs, Measurement: DefaultMeasurement}, nil
}

// IsSupported implements go-sev-guest's client.QuoteProvider.
func (*Device) IsSupported() bool { return true }

// GetRawQuote returns a signed version-3 report with reportData, followed
// by the fake certificate table.
func (d *Device) GetRawQuote(reportData [64]byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r := sevtest.CreateRawReport(&sevtest.TestReportOptions{
		ReportData: reportData[:],
		Version:    3,
		FMS:        milanCPUID1EAX,
		SignerInfo: abi.SignerInfo{SigningKey: abi.VcekReportSigner},
	})
	report := r[:abi.ReportSize]
	binary.LittleEndian.PutUint64(report[0x08:0x10], abi.SnpPolicyToBytes(abi.SnpPolicy{Debug: d.Debug, SMT: true}))
	copy(report[0x90:0xC0], d.Measurement[:])
	rs, ss, err := d.signer.Sign(abi.SignedComponent(report))
	if err != nil {
		return nil, fmt.Errorf("fake sign report: %w", err)
	}
	if err := abi.SetSignature(rs, ss, report); err != nil {
		return nil, fmt.Errorf("fake sign report: %w", err)
	}
	if d.NoCerts {
		return report, nil
	}
	return append(report, d.certs...), nil
}

// VCEK is the fake VCEK certificate (DER).
func (d *Device) VCEK() []byte { return d.signer.Vcek.Raw }

// Roots are the fake ARK and ASK as trusted roots for snp.Verifier.
func (d *Device) Roots() map[string][]*trust.AMDRootCerts {
	return map[string][]*trust.AMDRootCerts{ProductLine: {{
		ProductLine:  ProductLine,
		ProductCerts: &trust.ProductCerts{Ark: d.signer.Ark, Ask: d.signer.Ask},
	}}}
}

// Verifier is an snp.Verifier trusting the fake roots at now.
func (d *Device) Verifier(now time.Time) snp.Verifier {
	return snp.Verifier{Roots: d.Roots(), Now: func() time.Time { return now }}
}
