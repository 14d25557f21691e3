package snp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/tpm"
)

// combined is a TPM backend with an SNP source beside it, as the daemon
// wires a confidential VM with a vTPM; its evidence is the union of both.
type combined struct {
	*tpm.Backend
	src *snp.Source
}

func (c combined) Name() string { return "tpm+snp" }

func (c combined) Evidence(ctx context.Context, b attest.Binding) (*attest.Evidence, error) {
	ev, err := c.Backend.Evidence(ctx, b)
	if err != nil {
		return nil, err
	}
	tee, err := c.src.Evidence(ctx, b)
	if err != nil {
		return nil, err
	}
	ev.Backend = c.Name()
	ev.Parts = append(ev.Parts, tee.Parts...)
	return ev, nil
}

// combinedVerifier splits the union and requires both verifiers to pass.
type combinedVerifier struct {
	tpm tpm.Verifier
	snp snp.Verifier
}

func (combinedVerifier) Backend() string { return "tpm+snp" }

func (v combinedVerifier) Verify(ev *attest.Evidence, opts attest.VerifyOptions) (*attest.Claims, []attest.Check) {
	t, s := &attest.Evidence{Backend: "tpm"}, &attest.Evidence{Backend: snp.Name}
	for _, p := range ev.Parts {
		if strings.HasPrefix(p.Name, "snp/") {
			s.Parts = append(s.Parts, p)
		} else {
			t.Parts = append(t.Parts, p)
		}
	}
	tc, tchecks := v.tpm.Verify(t, opts)
	sc, schecks := v.snp.Verify(s, opts)
	checks := append(tchecks, schecks...)
	if tc == nil || sc == nil {
		return nil, checks
	}
	return tc, checks
}

func TestConformanceCombinedWithTPMSimulator(t *testing.T) {
	d := newDevice(t)
	newCombined := func(t *testing.T) attest.Backend {
		sim, err := simulator.Get()
		if err != nil {
			t.Fatal(err)
		}
		b, err := tpm.New(sim, tpm.Config{FirmwareLogPath: "/nonexistent"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		src, err := snp.NewSource(snp.Config{Provider: d}, b.Signer().Public())
		if err != nil {
			t.Fatal(err)
		}
		return combined{Backend: b, src: src}
	}
	attesttest.RunOptions(t, newCombined, combinedVerifier{snp: d.Verifier(now)}, attesttest.Options{
		Unauthenticated: []string{tpm.PartEKCert, tpm.PartAKCert},
	})
}

// TestSourceEvidenceNamesTheKey: Source evidence carries no register and
// REPORT_DATA[32:64] names the other backend's key.
func TestSourceEvidenceNamesTheKey(t *testing.T) {
	d := newDevice(t)
	owner := newBackend(t, d) // any key will do as "the TPM's"
	src, err := snp.NewSource(snp.Config{Provider: d}, owner.Signer().Public())
	if err != nil {
		t.Fatal(err)
	}
	ev, opts := evidence(t, sourceAsBackend{owner, src})
	if _, ok := ev.Part(snp.PartRegister); ok {
		t.Error("Source evidence carries a software register")
	}
	claims, checks := d.Verifier(now).Verify(ev, opts)
	if claims == nil {
		t.Fatalf("checks %+v", checks)
	}
	if len(claims.Registers) != 0 || claims.Bank != 0 {
		t.Errorf("Source claims registers %v bank %v; want none", claims.Registers, claims.Bank)
	}
}

type sourceAsBackend struct {
	*snp.Backend
	src *snp.Source
}

func (s sourceAsBackend) Evidence(ctx context.Context, b attest.Binding) (*attest.Evidence, error) {
	return s.src.Evidence(ctx, b)
}
