package bench

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/trust"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// verify measures in-process verification (verify.BundleReport) per core:
// one TPM attestation as `attestctl attest` writes it (the envelope and the
// event log it names), and whole 5-attestation bundles of the TPM backend
// and of the SEV-SNP and TDX fakes. The bundles come
// from real daemons: attestd on swtpm, and attestd built with the demo's
// fake TEE devices (-tags attestd_demo_fakes, as `DEMO_BACKEND=snp make
// demo` runs it), which sign with fake vendor roots.
func (h *harness) verify(ctx context.Context) ([]VerifyResult, error) {
	var out []VerifyResult
	tb, err := h.tpmBundle(ctx)
	if err != nil {
		return nil, fmt.Errorf("TPM bundle: %w", err)
	}
	one := &madeBundle{raw: tb.admission, count: 1, opts: tb.opts}
	out = append(out, h.verifyBundle("TPM attestation", one))
	out = append(out, h.verifyBundle("TPM bundle", tb))

	fakes, err := buildAttestd(ctx, h.cfg.Root, h.tmp, "attestd-demo-fakes", "attestd_demo_fakes")
	if err != nil {
		return out, err
	}
	for _, kind := range []string{"snp", "tdx"} {
		name := map[string]string{"snp": "SEV-SNP", "tdx": "TDX"}[kind] + " bundle"
		b, err := h.teeBundle(ctx, fakes, kind)
		if err != nil {
			out = append(out, VerifyResult{What: name, Err: err.Error()})
			continue
		}
		out = append(out, h.verifyBundle(name, b))
	}
	return out, nil
}

// madeBundle is a bundle an environment made and how to verify it.
type madeBundle struct {
	raw       []byte
	admission []byte // the Attest response as `attestctl attest` writes it
	count     int    // attestations in raw
	nonces    map[attest.Purpose][]byte
	opts      verify.Options
}

func (h *harness) verifyBundle(what string, b *madeBundle) VerifyResult {
	return h.verifyLoop(what, b.raw, b.count, func() error {
		if rep := verify.BundleReport(b.raw, b.opts); !rep.OK {
			return fmt.Errorf("not verified: %v", rep.Failed())
		}
		return nil
	})
}

// verifyLoop runs f on one core (GOMAXPROCS=1) for h.p.VerifyDuration and
// counts per CPU second of the process (nothing else in it is busy then)
// and per wall second.
func (h *harness) verifyLoop(what string, input []byte, count int, f func() error) VerifyResult {
	r := VerifyResult{What: what, Bytes: len(input), Count: count}
	if err := f(); err != nil {
		r.Err = err.Error()
		return r
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	runtime.GC()
	cpu0, t0 := cpuTime(), time.Now()
	for r.N = 0; r.N < 3 || time.Since(t0) < h.p.VerifyDuration; r.N++ {
		if err := f(); err != nil {
			r.Err = err.Error()
			return r
		}
	}
	cpu, wall := cpuTime()-cpu0, time.Since(t0)
	r.PerCPUSecond = float64(r.N) / cpu.Seconds()
	r.PerWallSecond = float64(r.N) / wall.Seconds()
	h.logf("verify %s: %.0f/s per CPU second, %.0f/s per wall second (%d in %v)", what, r.PerCPUSecond, r.PerWallSecond, r.N, wall.Round(time.Millisecond))
	return r
}

// cpuTime is the user and system time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// lifecycle runs a whole build on c: an admission, dispatch, completion and
// one signed provenance statement, and returns the bundle (launch,
// admission, dispatch, completion, statement).
func lifecycle(ctx context.Context, c *apiv1.Client) (*madeBundle, error) {
	b := &madeBundle{nonces: map[attest.Purpose][]byte{
		attest.PurposeAttest: nonce(), attest.PurposeDispatch: nonce(), attest.PurposeComplete: nonce(),
	}}
	ar, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: b.nonces[attest.PurposeAttest]})
	if err != nil {
		return nil, fmt.Errorf("Attest: %w", err)
	}
	b.admission = scai.AttestationLines(ar.GetEnvelope(), ar.GetEventLog(), ar.GetInclusionProof())
	if _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: buildID, Request: buildRequest, Nonce: b.nonces[attest.PurposeDispatch]}); err != nil {
		return nil, fmt.Errorf("BindBuild: %w", err)
	}
	outputs := descriptors("out", 1)
	if _, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: buildID, Inputs: descriptors("in", 1), Outputs: outputs,
		Nonce: b.nonces[attest.PurposeComplete]}); err != nil {
		return nil, fmt.Errorf("Complete: %w", err)
	}
	if _, err := c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: buildID, Statement: provenance(outputs[0])}); err != nil {
		return nil, fmt.Errorf("SignStatement: %w", err)
	}
	resp, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetBundle: %w", err)
	}
	b.raw, b.count = bundleBytes(resp), len(resp.GetEnvelopes())
	return b, nil
}

// tpmBundle makes a bundle with attestd on swtpm; the verifier pins the AK
// read from the TPM itself.
func (h *harness) tpmBundle(ctx context.Context) (*madeBundle, error) {
	e, err := h.startTPMEnv(ctx, h.cfg.TmpfsDir)
	if err != nil {
		return nil, err
	}
	defer e.close()
	raw, err := openRawTPM(e.proxy.Socket())
	if err != nil {
		return nil, err
	}
	ak := raw.AK
	raw.Close()
	b, err := lifecycle(ctx, e.c)
	if err != nil {
		return nil, err
	}
	b.opts = verify.Options{
		TrustedAKs: []crypto.PublicKey{ak}, Nonces: b.nonces, BuildID: buildID,
		Verifiers: []attest.Verifier{tpm.Verifier{}},
	}
	return b, nil
}

// teeBundle makes a bundle with the demo binary on a fake SEV-SNP or TDX
// device (no TPM), and trusts the fake vendor roots it writes, as the
// demo's policy does.
func (h *harness) teeBundle(ctx context.Context, binary, kind string) (*madeBundle, error) {
	dir, err := os.MkdirTemp(h.tmp, kind)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	run, err := os.MkdirTemp(h.cfg.TmpfsDir, "attestd-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(run)
	roots := filepath.Join(dir, "roots.pem")
	d, err := startDaemon(ctx, daemonConfig{
		Binary: binary, RuntimeDir: run, WorkDir: dir, Backend: kind, Executors: []string{"/bin/sh"},
		Env: []string{"ATTESTD_DEMO_FAKE_TEE=" + kind, "ATTESTD_DEMO_FAKE_ROOTS=" + roots},
	})
	if err != nil {
		return nil, err
	}
	defer d.stop()
	c, err := d.client()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	b, err := lifecycle(ctx, c)
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(roots)
	if err != nil {
		return nil, err
	}
	certs, err := verify.ParsePEMCertificates(pem)
	if err != nil {
		return nil, fmt.Errorf("fake roots: %w", err)
	}
	var v attest.Verifier
	if kind == "snp" {
		v, err = snpVerifier(certs)
		if err != nil {
			return nil, err
		}
	} else {
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		// Intel's collateral cannot be faked (docs/tee.md).
		v = tdx.Verifier{Roots: pool, InsecureSkipCollateral: true}
	}
	b.opts = verify.Options{Nonces: b.nonces, BuildID: buildID, Verifiers: []attest.Verifier{v}}
	return b, nil
}

// snpVerifier trusts the fake ARK (self-signed) and ASK of the Milan line,
// as attestctl does for a policy's trust.snp.roots.
func snpVerifier(certs []*x509.Certificate) (snp.Verifier, error) {
	const line = "Milan"
	pc := &trust.ProductCerts{}
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			pc.Ark = c
		} else {
			pc.Ask = c
		}
	}
	if pc.Ark == nil || pc.Ask == nil {
		return snp.Verifier{}, errors.New("fake SEV-SNP roots: want the ARK and the ASK")
	}
	return snp.Verifier{
		Roots:   map[string][]*trust.AMDRootCerts{line: {{ProductLine: line, ProductCerts: pc}}},
		Product: &spb.SevProduct{Name: spb.SevProduct_SEV_PRODUCT_MILAN},
	}, nil
}
