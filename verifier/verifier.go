// Package verifier is attestd's verifier as a library, for a control plane
// to embed: an appraisal policy in (verify.Policy, from a file or built in
// code), verdicts out (verify.Evaluation), exactly as attestctl verify
// gives them. It sets up the backend evidence verifiers (TPM, SEV-SNP, TDX)
// from the policy's trust section and runs verify's pipeline with them; the
// verify package itself stays free of backends (docs/architecture.md).
//
// A Verifier is safe for concurrent use and keeps the backends' caches
// across calls, so that many attestations of one fleet verify cheaply.
//
// For a service that decides per call what to expect (the fleet verifier,
// docs/fleet.md): EvaluateExpecting joins the nonce it issued, the build
// it recorded and the AKs it registered to the policy for one call;
// Inspect reads a bundle's facts (env key, AK, boot, nonces) to look those
// up before verifying; StartRegistration is the verifier's half of AK
// registration by credential activation, relayed through the executor.
package verifier

import (
	"bytes"
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

// Config is how a Verifier runs. The zero value is the production one.
type Config struct {
	// Now is the appraisal time (freshness, certificate validity); nil
	// means time.Now.
	Now func() time.Time
}

// Verifier appraises bundles against one policy.
type Verifier struct {
	policy    *verify.Policy
	verifiers []attest.Verifier
	now       func() time.Time
}

// New sets up a Verifier for p. A policy not resolved yet (LoadPolicy,
// Resolve, ResolveIn) is resolved here, relative to the working directory.
// Errors wrap verify.ErrPolicy.
func New(p *verify.Policy, cfg Config) (*Verifier, error) {
	if p.Resolved == nil {
		if err := p.ResolveIn("."); err != nil {
			return nil, err
		}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	v := &Verifier{policy: p, now: now}
	sv, err := snpVerifier(p, now)
	if err != nil {
		return nil, err
	}
	v.verifiers = []attest.Verifier{
		tpm.Verifier{Now: now, Hardware: p.Trust.TPM.Hardware},
		sv,
		tdxVerifier(p, now),
	}
	return v, nil
}

// Evaluate verifies and appraises the bundles (see verify.Evaluate).
func (v *Verifier) Evaluate(inputs []verify.Input) *verify.Evaluation {
	return verify.Evaluate(v.policy, inputs, verify.Config{Verifiers: v.verifiers, Now: v.now()})
}

var snpProducts = map[string]spb.SevProduct_SevProductName{
	"Milan": spb.SevProduct_SEV_PRODUCT_MILAN, "Genoa": spb.SevProduct_SEV_PRODUCT_GENOA, "Turin": spb.SevProduct_SEV_PRODUCT_TURIN,
}

func snpVerifier(p *verify.Policy, now func() time.Time) (snp.Verifier, error) {
	s := p.Trust.SNP
	v := snp.Verifier{Now: now}
	v.Policy.AllowDebugUnsafe = s.AllowDebugUnsafe
	for _, m := range s.Measurements {
		v.Policy.Measurements = append(v.Policy.Measurements, [48]byte(m))
	}
	v.Policy.MinimumTCB = kds.TCBParts{BlSpl: s.MinimumTCB.Bootloader, TeeSpl: s.MinimumTCB.TEE, SnpSpl: s.MinimumTCB.SNP, UcodeSpl: s.MinimumTCB.Microcode}
	if s.HostData != nil {
		hd := [32]byte(*s.HostData)
		v.Policy.HostData = &hd
	}
	line := "Milan"
	if s.Product != "" {
		line = s.Product
		v.Product = &spb.SevProduct{Name: snpProducts[s.Product]}
	}
	res := p.Resolved
	if len(res.SNPRoots) > 0 {
		pc := &trust.ProductCerts{}
		for _, c := range res.SNPRoots {
			if bytes.Equal(c.RawIssuer, c.RawSubject) {
				pc.Ark = c
			} else {
				pc.Ask = c
			}
		}
		if pc.Ark == nil || pc.Ask == nil {
			return v, fmt.Errorf("%w: trust.snp.roots: want the ARK (self-signed) and the ASK", verify.ErrPolicy)
		}
		v.Roots = map[string][]*trust.AMDRootCerts{line: {{ProductLine: line, ProductCerts: pc}}}
	}
	v.VCEK = res.SNPVCEK
	return v, nil
}

func tdxVerifier(p *verify.Policy, now func() time.Time) tdx.Verifier {
	t := p.Trust.TDX
	v := tdx.Verifier{Now: now, CollateralDir: p.Resolved.TDXCollateralDir, InsecureSkipCollateral: t.InsecureSkipCollateral, Roots: p.Resolved.TDXRoots}
	v.Policy.AllowDebugUnsafe = t.AllowDebugUnsafe
	for _, m := range t.MRTDs {
		v.Policy.MRTDs = append(v.Policy.MRTDs, [48]byte(m))
	}
	if len(t.RTMRs) == 3 {
		v.Policy.RTMRs = &[3][48]byte{t.RTMRs[0], t.RTMRs[1], t.RTMRs[2]}
	}
	if t.MinimumTEETCBSVN != nil {
		svn := [16]byte(*t.MinimumTEETCBSVN)
		v.Policy.MinimumTEETCBSVN = &svn
	}
	return v
}
