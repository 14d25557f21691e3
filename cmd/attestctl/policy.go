package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/verify"
)

// policyVerifiers applies the policy's trust section to the backend
// verifiers built from the flags (the policy adds to what flags set). The
// verify package does not import backends; this is where its policy meets
// them.
func policyVerifiers(p *verify.Policy, vs []attest.Verifier, now func() time.Time) ([]attest.Verifier, error) {
	out := make([]attest.Verifier, 0, len(vs))
	for _, v := range vs {
		switch x := v.(type) {
		case tpm.Verifier:
			x.Now = now
			v = x
		case snp.Verifier:
			s := p.Trust.SNP
			x.Now = now
			x.Policy.AllowDebugUnsafe = x.Policy.AllowDebugUnsafe || s.AllowDebugUnsafe
			x.Policy.Measurements = append(x.Policy.Measurements, p.SNPMeasurements()...)
			x.Policy.MinimumTCB = kds.TCBParts{BlSpl: uint8(s.MinimumTCB.Bootloader), TeeSpl: uint8(s.MinimumTCB.TEE),
				SnpSpl: uint8(s.MinimumTCB.SNP), UcodeSpl: uint8(s.MinimumTCB.Microcode)}
			if s.HostData != "" {
				b, _ := hex.DecodeString(s.HostData)
				hd := [32]byte(b)
				x.Policy.HostData = &hd
			}
			line := s.Product
			if line == "" {
				line = "Milan"
			}
			if s.Product != "" {
				x.Product = &spb.SevProduct{Name: map[string]spb.SevProduct_SevProductName{
					"Milan": spb.SevProduct_SEV_PRODUCT_MILAN, "Genoa": spb.SevProduct_SEV_PRODUCT_GENOA, "Turin": spb.SevProduct_SEV_PRODUCT_TURIN,
				}[s.Product]}
			}
			if p.Resolved != nil && len(p.Resolved.SNPRoots) > 0 {
				roots, err := snpRoots(line, p)
				if err != nil {
					return nil, err
				}
				x.Roots = roots
			}
			if p.Resolved != nil && p.Resolved.SNPVCEK != nil && x.VCEK == nil {
				x.VCEK = p.Resolved.SNPVCEK
			}
			v = x
		case tdx.Verifier:
			t := p.Trust.TDX
			x.Now = now
			x.Policy.AllowDebugUnsafe = x.Policy.AllowDebugUnsafe || t.AllowDebugUnsafe
			x.Policy.MRTDs = append(x.Policy.MRTDs, p.TDXMRTDs()...)
			if r := p.TDXRTMRs(); r != nil {
				x.Policy.RTMRs = r
			}
			if t.MinimumTEETCBSVN != "" {
				b, _ := hex.DecodeString(t.MinimumTEETCBSVN)
				svn := [16]byte(b)
				x.Policy.MinimumTEETCBSVN = &svn
			}
			if t.CollateralDir != "" && x.CollateralDir == "" {
				x.CollateralDir = t.CollateralDir
			}
			x.InsecureSkipCollateral = x.InsecureSkipCollateral || t.InsecureSkipCollateral
			if p.Resolved != nil && p.Resolved.TDXRoots != nil {
				x.Roots = p.Resolved.TDXRoots
			}
			v = x
		}
		out = append(out, v)
	}
	return out, nil
}

// snpRoots sorts the policy's AMD certificates into ARK (self-signed) and
// ASK (signed by the ARK).
func snpRoots(line string, p *verify.Policy) (map[string][]*trust.AMDRootCerts, error) {
	pc := &trust.ProductCerts{}
	for _, c := range p.Resolved.SNPRoots {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			pc.Ark = c
		} else {
			pc.Ask = c
		}
	}
	if pc.Ark == nil || pc.Ask == nil {
		return nil, fmt.Errorf("%w: trust.snp.roots: want the ARK (self-signed) and the ASK", verify.ErrPolicy)
	}
	return map[string][]*trust.AMDRootCerts{line: {{ProductLine: line, ProductCerts: pc}}}, nil
}
