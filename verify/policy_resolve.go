package verify

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
)

// Resolved is what the files named by a policy hold. Reading them checks
// only their syntax; the reference statement's signature is checked here
// too (it is a trust input), its values later against evidence.
type Resolved struct {
	TrustedAKs []crypto.PublicKey
	AKRoots    *x509.CertPool // nil when none
	EKRoots    *x509.CertPool // nil when none
	SNPRoots   []*x509.Certificate
	SNPVCEK    []byte
	TDXRoots   *x509.CertPool // nil: the vendor's embedded root
	// TDXCollateralDir is trust.tdx.collateral_dir as a path (ResolveIn).
	TDXCollateralDir string
	// Reference is the opened reference-values statement, or nil with
	// ReferenceErr saying why it is not usable (reported as a failed
	// reference-values check, not as a bad policy).
	Reference    *ReferenceValues
	ReferenceErr error
	// ReferenceSHA256 is the SHA-256 of the reference-values file (an
	// input of the verification, named in VSAs).
	ReferenceSHA256 [32]byte
}

// maxPolicyFile bounds a file a policy names.
const maxPolicyFile = 16 << 20

// LoadPolicy reads, parses and resolves the policy at path; relative file
// names in it are relative to its directory. Every error is a *PolicyError.
func LoadPolicy(path string) (*Policy, error) {
	raw, err := readBounded(path)
	if err != nil {
		return nil, policyErr(0, "", err.Error())
	}
	p, err := ParsePolicy(raw)
	if err != nil {
		return nil, err
	}
	if err := p.ResolveIn(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return p, nil
}

// ResolveIn is Resolve from the file system, with relative names taken
// relative to dir (the policy file's directory); trust.tdx.collateral_dir
// is resolved the same way (Resolved.TDXCollateralDir).
func (p *Policy) ResolveIn(dir string) error { return p.ResolveInWith(dir, nil) }

// Unwrap returns the DSSE envelope (JSON) that a signed file carries in
// another form, checked with keys, and any other file as it is. Package
// distribute's ToDSSE reads Sigstore bundles; verify cannot import it (the
// arrows point the other way), so its caller passes it in.
type Unwrap func(raw []byte, keys []crypto.PublicKey) ([]byte, error)

// ResolveInWith is ResolveIn with unwrap (nil: none) applied to the
// reference-values file before it is opened; ReferenceSHA256 is then the
// digest of its DSSE form.
func (p *Policy) ResolveInWith(dir string, unwrap Unwrap) error {
	if err := p.resolve(func(name string) ([]byte, error) { return readBounded(inDir(dir, name)) }, unwrap); err != nil {
		return err
	}
	if d := p.Trust.TDX.CollateralDir; d != "" {
		p.Resolved.TDXCollateralDir = inDir(dir, d)
	}
	return nil
}

func inDir(dir, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > maxPolicyFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPolicyFile)
	}
	return os.ReadFile(path)
}

// Resolve reads the files the policy names with readFile and fills
// p.Resolved. Errors name the policy key and line of the file at fault.
func (p *Policy) Resolve(readFile func(name string) ([]byte, error)) error {
	return p.resolve(readFile, nil)
}

func (p *Policy) resolve(readFile func(name string) ([]byte, error), unwrap Unwrap) error {
	r := &Resolved{}
	read := func(key, name string) ([]byte, error) {
		b, err := readFile(name)
		if err != nil {
			return nil, p.errAt(key, "%v", err)
		}
		return b, nil
	}
	certs := func(key, name string) ([]*x509.Certificate, error) {
		b, err := read(key, name)
		if err != nil {
			return nil, err
		}
		out, err := ParsePEMCertificates(b)
		if err != nil {
			return nil, p.errAt(key, "%s: %v", name, err)
		}
		return out, nil
	}
	pool := func(key string, names []string) (*x509.CertPool, error) {
		if len(names) == 0 {
			return nil, nil
		}
		pl := x509.NewCertPool()
		for i, n := range names {
			cs, err := certs(fmt.Sprintf("%s[%d]", key, i), n)
			if err != nil {
				return nil, err
			}
			for _, c := range cs {
				pl.AddCert(c)
			}
		}
		return pl, nil
	}
	pubKey := func(key, name string) (crypto.PublicKey, error) {
		b, err := read(key, name)
		if err != nil {
			return nil, err
		}
		k, err := ParsePEMPublicKey(b)
		if err != nil {
			return nil, p.errAt(key, "%s: %v", name, err)
		}
		return k, nil
	}
	var err error
	for i, f := range p.Trust.TPM.PinnedAKs {
		k, err := pubKey(fmt.Sprintf("trust.tpm.pinned_aks[%d]", i), f)
		if err != nil {
			return err
		}
		r.TrustedAKs = append(r.TrustedAKs, k)
	}
	if r.AKRoots, err = pool("trust.tpm.ak_roots", p.Trust.TPM.AKRoots); err != nil {
		return err
	}
	if r.EKRoots, err = pool("trust.tpm.ek_roots", p.Trust.TPM.EKRoots); err != nil {
		return err
	}
	if p.Trust.SNP.Roots != "" {
		if r.SNPRoots, err = certs("trust.snp.roots", p.Trust.SNP.Roots); err != nil {
			return err
		}
	}
	if p.Trust.SNP.VCEK != "" {
		if r.SNPVCEK, err = read("trust.snp.vcek", p.Trust.SNP.VCEK); err != nil {
			return err
		}
		if _, err := x509.ParseCertificate(r.SNPVCEK); err != nil {
			return p.errAt("trust.snp.vcek", "%s: want a DER certificate: %v", p.Trust.SNP.VCEK, err)
		}
	}
	if p.Trust.TDX.Roots != "" {
		if r.TDXRoots, err = pool("trust.tdx.roots", []string{p.Trust.TDX.Roots}); err != nil {
			return err
		}
	}
	if p.Reference.File != "" {
		var keys []crypto.PublicKey
		for i, f := range p.Reference.Keys {
			k, err := pubKey(fmt.Sprintf("reference.keys[%d]", i), f)
			if err != nil {
				return err
			}
			keys = append(keys, k)
		}
		b, err := read("reference.file", p.Reference.File)
		if err != nil {
			return err
		}
		if unwrap != nil {
			if d, err := unwrap(b, keys); err != nil {
				r.ReferenceErr = fmt.Errorf("reference values: %w", err)
			} else {
				b = d
			}
		}
		if r.ReferenceErr == nil {
			r.Reference, r.ReferenceErr = OpenReference(b, keys)
		}
		r.ReferenceSHA256 = sha256.Sum256(b)
	}
	r.TDXCollateralDir = p.Trust.TDX.CollateralDir
	p.Resolved = r
	return nil
}

// ParsePEMCertificates returns every CERTIFICATE block of a PEM file (other
// blocks are skipped); none is an error.
func ParsePEMCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM certificates")
	}
	return out, nil
}
