package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/verify"
)

// verify's flags are a shorthand for policy fields: policy builds the policy
// that verify evaluates, from --policy (if given) and the flags on top of it.
// With no flags beyond --policy, the file is the policy, digest and all;
// otherwise the result is sealed anew and its digest is over its rendered
// form. doc is the document the digest is over (--policy-out writes it).
func (f *verifyFlags) policy() (p *verify.Policy, doc []byte, err error) {
	p, dir := verify.NewPolicy(), "."
	if *f.policyFile != "" {
		if doc, err = readInput(*f.policyFile); err != nil {
			return nil, nil, fmt.Errorf("%w: policy: %v", errUsage, err)
		}
		if p, err = verify.ParsePolicy(doc); err != nil {
			return nil, nil, fmt.Errorf("%w: policy %s: %v", errUsage, *f.policyFile, err)
		}
		dir = filepath.Dir(*f.policyFile)
	}
	changed, err := f.overlay(p)
	if err != nil {
		return nil, nil, err
	}
	if changed || *f.policyFile == "" {
		if err := p.Seal(); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		if doc, err = p.Render(); err != nil {
			return nil, nil, err
		}
	}
	// Reference values may come as a Sigstore bundle (reference --format
	// sigstore): sigstore-go verifies it with the reference keys.
	if err := p.ResolveInWith(dir, distribute.ToDSSE); err != nil {
		what := "policy"
		if *f.policyFile != "" {
			what += " " + *f.policyFile
		}
		return nil, nil, fmt.Errorf("%w: %s: %v", errUsage, what, err)
	}
	return p, doc, nil
}

// overlay writes the flags into p and reports whether any was given.
func (f *verifyFlags) overlay(p *verify.Policy) (bool, error) {
	changed, seen := false, map[attest.Purpose]bool{}
	// abs names a file from the command line in the policy: absolute,
	// since the policy's own names are relative to its directory.
	abs := func(name string) string {
		changed = true
		if a, err := filepath.Abs(name); err == nil {
			return a
		}
		return name
	}
	for _, n := range f.nonces {
		purpose, hexs := attest.PurposeAttest, n
		if pu, h, ok := strings.Cut(n, "="); ok {
			purpose, hexs = attest.Purpose(pu), h
		}
		switch purpose {
		case attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete:
		default:
			return false, fmt.Errorf("%w: --nonce %s: purpose must be attest, dispatch or complete", errUsage, n)
		}
		if seen[purpose] {
			return false, fmt.Errorf("%w: --nonce for %s given twice", errUsage, purpose)
		}
		seen[purpose] = true
		b, err := parseNonce(hexs)
		if err != nil {
			return false, err
		}
		if p.Freshness.Nonces == nil {
			p.Freshness.Nonces = map[attest.Purpose]verify.Nonce{}
		}
		p.Freshness.Nonces[purpose], changed = b, true
	}
	if id := *f.buildID; id != "" {
		if p.Build.ID != "" && p.Build.ID != id {
			return false, fmt.Errorf("%w: --build-id %q: the policy's build.id is %q", errUsage, id, p.Build.ID)
		}
		p.Build.ID, changed = id, true
	}
	for _, k := range f.trustAK {
		p.Trust.TPM.PinnedAKs = append(p.Trust.TPM.PinnedAKs, abs(k))
	}
	for _, r := range f.akRoots {
		p.Trust.TPM.AKRoots = append(p.Trust.TPM.AKRoots, abs(r))
	}
	if *f.insecure {
		p.Trust.TPM.InsecureTrustEmbeddedAK, changed = true, true
	}
	if err := f.refs.overlay(p, abs); err != nil {
		return false, err
	}
	teeChanged, err := f.tee.overlay(p, abs)
	return changed || teeChanged, err
}

// referenceFlags are verify's --reference and --reference-key.
type referenceFlags struct {
	files, keys multiFlag
}

func newReferenceFlags(fs *pflag.FlagSet) *referenceFlags {
	rf := &referenceFlags{}
	fs.Var(&rf.files, "reference", "`FILE` of signed reference values of the image (attestctl reference); needs --reference-key")
	fs.Var(&rf.keys, "reference-key", "`PEM` public key of the image baker that signed --reference (repeatable)")
	return rf
}

func (rf *referenceFlags) overlay(p *verify.Policy, abs func(string) string) error {
	switch {
	case len(rf.files) == 0 && len(rf.keys) > 0:
		return fmt.Errorf("%w: --reference-key without --reference", errUsage)
	case len(rf.files) == 0:
		return nil
	case len(rf.files) > 1:
		return fmt.Errorf("%w: --reference given more than once", errUsage)
	case len(rf.keys) == 0:
		return fmt.Errorf("%w: --reference needs --reference-key", errUsage)
	case p.Reference.File != "":
		return fmt.Errorf("%w: --reference: the policy names reference.file already", errUsage)
	}
	p.Reference.File = abs(rf.files[0])
	for _, k := range rf.keys {
		p.Reference.Keys = append(p.Reference.Keys, abs(k))
	}
	return nil
}

func (o *teeOptions) overlay(p *verify.Policy, abs func(string) string) (changed bool, err error) {
	if *o.snpVCEK != "" {
		if p.Trust.SNP.VCEK != "" {
			return false, fmt.Errorf("%w: --snp-vcek: the policy names trust.snp.vcek already", errUsage)
		}
		p.Trust.SNP.VCEK, changed = abs(*o.snpVCEK), true
	}
	for _, m := range o.snpMeasurements {
		h, err := hex48("--snp-measurement", m)
		if err != nil {
			return false, err
		}
		p.Trust.SNP.Measurements = append(p.Trust.SNP.Measurements, h)
		changed = true
	}
	if *o.tdxCollateral != "" {
		if p.Trust.TDX.CollateralDir != "" {
			return false, fmt.Errorf("%w: --tdx-collateral: the policy names trust.tdx.collateral_dir already", errUsage)
		}
		p.Trust.TDX.CollateralDir, changed = abs(*o.tdxCollateral), true
	}
	if *o.tdxSkipColl {
		p.Trust.TDX.InsecureSkipCollateral = true
		changed = true
	}
	for _, m := range o.tdxMRTDs {
		h, err := hex48("--tdx-mrtd", m)
		if err != nil {
			return false, err
		}
		p.Trust.TDX.MRTDs = append(p.Trust.TDX.MRTDs, h)
		changed = true
	}
	return changed, nil
}

func hex48(flagName, v string) (verify.Hex48, error) {
	var h verify.Hex48
	if err := h.UnmarshalText([]byte(v)); err != nil {
		return h, fmt.Errorf("%w: %s: %v", errUsage, flagName, err)
	}
	return h, nil
}
