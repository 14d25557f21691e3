package fleetload

import (
	"context"
	"encoding/pem"
	"fmt"
	"sync"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tdx/tdxtest"
	"github.com/attestd/attestd/verify"
)

// Source makes the environments of one evidence backend.
type Source interface {
	// Name is the backend's name in the report: "snp", "tdx", "tpm".
	Name() string
	// Backend is a new environment's evidence backend: a new environment
	// key, and for a TPM a new boot.
	Backend(ctx context.Context) (attest.Backend, error)
	// Trust adds to p what the verifier needs to trust this source's
	// evidence; files it names go into files (paths relative to the
	// policy). An AK of a TPM is registered in the store instead, as
	// AK registration does.
	Trust(p *verify.Policy, files map[string][]byte)
}

// SNP is a source of environments on one fake SEV-SNP guest (test-only
// AMD chain; the reports are really signed), created at created.
func SNP(created time.Time) (Source, error) {
	dev, err := snptest.New(created)
	if err != nil {
		return nil, fmt.Errorf("fake SEV-SNP device: %w", err)
	}
	return snpSource{dev}, nil
}

type snpSource struct{ dev *snptest.Device }

func (snpSource) Name() string { return snp.Name }

func (s snpSource) Backend(context.Context) (attest.Backend, error) {
	return snp.New(snp.Config{Provider: s.dev})
}

func (s snpSource) Trust(p *verify.Policy, files map[string][]byte) {
	var roots []byte
	for _, r := range s.dev.Roots()[snptest.ProductLine] {
		for _, c := range [][]byte{r.ProductCerts.Ark.Raw, r.ProductCerts.Ask.Raw} {
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
		}
	}
	files["snp-roots.pem"] = roots
	p.Trust.SNP.Roots, p.Trust.SNP.Product = "snp-roots.pem", snptest.ProductLine
}

// TDX is a source of n environments, each on its own fake TDX guest (its
// own RTMRs, and its own test-only Intel chain, all of whose roots the
// policy trusts), created at created.
func TDX(created time.Time, n int) (Source, error) {
	s := &tdxSource{}
	for range n {
		dev, err := tdxtest.New(created)
		if err != nil {
			return nil, fmt.Errorf("fake TDX device: %w", err)
		}
		s.devs = append(s.devs, dev)
	}
	return s, nil
}

type tdxSource struct {
	mu   sync.Mutex
	devs []*tdxtest.Device
	next int
}

func (*tdxSource) Name() string { return tdx.Name }

func (s *tdxSource) Backend(context.Context) (attest.Backend, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == len(s.devs) {
		return nil, fmt.Errorf("all %d fake TDX devices are in use", len(s.devs))
	}
	dev := s.devs[s.next]
	s.next++
	return tdx.New(tdx.Config{Provider: dev, RTMRs: dev})
}

func (s *tdxSource) Trust(p *verify.Policy, files map[string][]byte) {
	var roots []byte
	for _, d := range s.devs {
		roots = append(roots, d.RootPEM()...)
	}
	files["tdx-roots.pem"] = roots
	// Intel's collateral cannot be faked (docs/tee.md).
	p.Trust.TDX.Roots, p.Trust.TDX.InsecureSkipCollateral = "tdx-roots.pem", true
}
