package fleetload

import (
	"bytes"
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

// TDX is a source of environments on fake TDX guests of one machine (one
// test-only Intel chain, created at created): each environment has RTMRs of
// its own.
func TDX(created time.Time) (Source, error) {
	dev, err := tdxtest.New(created)
	if err != nil {
		return nil, fmt.Errorf("fake TDX device: %w", err)
	}
	return &tdxSource{dev: dev}, nil
}

type tdxSource struct {
	mu  sync.Mutex // held while the device holds one guest's RTMRs
	dev *tdxtest.Device
}

func (*tdxSource) Name() string { return tdx.Name }

func (s *tdxSource) Backend(context.Context) (attest.Backend, error) {
	g := &tdxGuest{src: s}
	return tdx.New(tdx.Config{Provider: g, RTMRs: g})
}

func (s *tdxSource) Trust(p *verify.Policy, files map[string][]byte) {
	files["tdx-roots.pem"] = s.dev.RootPEM()
	// Intel's collateral cannot be faked (docs/tee.md).
	p.Trust.TDX.Roots, p.Trust.TDX.InsecureSkipCollateral = "tdx-roots.pem", true
}

// tdxGuest is one environment's TD on the shared fake device: it keeps its
// own RTMR extends and puts them into the device (from zero) for each
// quote or read, so guests never see each other's measurements.
type tdxGuest struct {
	src     *tdxSource
	extends []rtmrExtend
}

type rtmrExtend struct {
	index  int
	digest []byte
}

// load makes the device's RTMRs this guest's; the caller holds src.mu.
func (g *tdxGuest) load() error {
	g.src.dev.ZeroRTMRs()
	for _, e := range g.extends {
		if err := g.src.dev.ExtendRTMR(e.index, e.digest); err != nil {
			return err
		}
	}
	return nil
}

func (g *tdxGuest) GetRawQuote(reportData [64]byte) ([]byte, error) {
	g.src.mu.Lock()
	defer g.src.mu.Unlock()
	if err := g.load(); err != nil {
		return nil, err
	}
	return g.src.dev.GetRawQuote(reportData)
}

func (g *tdxGuest) ExtendRTMR(index int, digest []byte) error {
	g.src.mu.Lock()
	defer g.src.mu.Unlock()
	if err := g.load(); err != nil {
		return err
	}
	if err := g.src.dev.ExtendRTMR(index, digest); err != nil {
		return err
	}
	g.extends = append(g.extends, rtmrExtend{index, bytes.Clone(digest)})
	return nil
}

func (g *tdxGuest) ReadRTMR(index int) ([]byte, error) {
	g.src.mu.Lock()
	defer g.src.mu.Unlock()
	if err := g.load(); err != nil {
		return nil, err
	}
	return g.src.dev.ReadRTMR(index)
}
