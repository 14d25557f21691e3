package main

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tdx/tdxtest"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

var (
	teeCreated = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	teeNow     = teeCreated.Add(24 * time.Hour)
)

// fakeTEE injects fake TEE devices for one test (the production hook is
// never changed outside tests).
func fakeTEE(t *testing.T, snpDev *snptest.Device, tdxDev *tdxtest.Device) {
	t.Helper()
	saved := teeDevices
	t.Cleanup(func() { teeDevices = saved })
	teeDevices.fake = true
	teeDevices.snp = func() (snp.QuoteProvider, error) {
		if snpDev == nil {
			return nil, attest.ErrNoDevice
		}
		return snpDev, nil
	}
	teeDevices.tdx = func() (tdx.Config, error) {
		if tdxDev == nil {
			return tdx.Config{}, attest.ErrNoDevice
		}
		return tdx.Config{Provider: tdxDev, RTMRs: tdxDev}, nil
	}
}

// teeLifecycle runs launch, attest, dispatch and completion and verifies
// each attestation with v.
func teeLifecycle(t *testing.T, d *testDaemon, v attest.Verifier) {
	t.Helper()
	ctx := context.Background()
	check := func(what string, lines []byte, nonce []byte) {
		t.Helper()
		_, r, err := verifyLines(lines, verify.Options{Nonce: nonce, Verifiers: []attest.Verifier{v}})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !r.OK {
			for _, c := range r.Checks {
				t.Logf("%-22s ok=%v skip=%v %s", c.Name, c.OK, c.Skip, c.Detail)
			}
			t.Fatalf("%s not verified: %v\n%s", what, r.Failed(), d.log)
		}
	}
	nonce := []byte("nonce from the control plane")
	resp, err := d.client.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
	if err != nil {
		t.Fatalf("Attest: %v\n%s", err, d.log)
	}
	check("attest", scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), resp.GetInclusionProof()), nonce)
	b, err := d.client.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1"})
	if err != nil {
		t.Fatalf("BindBuild: %v", err)
	}
	check("dispatch", scai.AttestationLines(b.GetEnvelope(), b.GetEventLog(), nil), nil)
	resp, err = d.client.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
	if err != nil {
		t.Fatalf("Attest after dispatch: %v", err)
	}
	lines := scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), resp.GetInclusionProof())
	check("attest after dispatch", lines, nonce)
	// A tampered verifier (Intel's/AMD's real roots) must refuse the fakes.
	var real attest.Verifier = snp.Verifier{}
	if v.Backend() == tdx.Name {
		real = tdx.Verifier{InsecureSkipCollateral: true}
	}
	if _, r, err := verifyLines(lines, verify.Options{Nonce: nonce, Verifiers: []attest.Verifier{real}}); err != nil || r.OK {
		t.Errorf("the vendor's real roots accepted a fake attestation (or it did not decode: %v)", err)
	}
}

func TestDaemonOnFakeSNP(t *testing.T) {
	dev, err := snptest.New(teeCreated)
	if err != nil {
		t.Fatal(err)
	}
	fakeTEE(t, dev, nil)
	d := startDaemon(t, "--backend=snp")
	if !strings.Contains(d.log.String(), "FAKE snp DEVICE") {
		t.Errorf("the fake is not announced loudly:\n%s", d.log)
	}
	teeLifecycle(t, d, dev.Verifier(teeNow))
}

func TestDaemonOnFakeTDX(t *testing.T) {
	dev, err := tdxtest.New(teeCreated)
	if err != nil {
		t.Fatal(err)
	}
	fakeTEE(t, nil, dev)
	d := startDaemon(t, "--backend=tdx")
	teeLifecycle(t, d, tdx.Verifier{Roots: dev.Roots(), InsecureSkipCollateral: true, Now: func() time.Time { return teeNow }})
}

func TestAutoPicksTDXBeforeSNP(t *testing.T) {
	sdev, err := snptest.New(teeCreated)
	if err != nil {
		t.Fatal(err)
	}
	tdev, err := tdxtest.New(teeCreated)
	if err != nil {
		t.Fatal(err)
	}
	fakeTEE(t, sdev, tdev)
	d := startDaemon(t, "--backend=auto")
	teeLifecycle(t, d, tdx.Verifier{Roots: tdev.Roots(), InsecureSkipCollateral: true, Now: func() time.Time { return teeNow }})
}

func TestMissingTEEDeviceIsOneClearLine(t *testing.T) {
	for _, kind := range []string{"snp", "tdx"} {
		t.Run(kind, func(t *testing.T) {
			fakeTEE(t, nil, nil)
			teeDevices.fake = false
			teeDevices.snp = func() (snp.QuoteProvider, error) { _, err := snp.Open(); return nil, err }
			teeDevices.tdx = func() (tdx.Config, error) { return tdx.Open() }
			err := runFn(context.Background(), []string{"--config", writeConfig(t), "--runtime-dir", t.TempDir(), "--backend=" + kind}, &syncBuffer{})
			if !errors.Is(err, attest.ErrNoDevice) {
				t.Fatalf("run = %v, want ErrNoDevice", err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "looked for") {
				t.Errorf("error %q: want one line naming what was looked for", msg)
			}
		})
	}
}

func writeConfig(t *testing.T) string {
	t.Helper()
	p := t.TempDir() + "/config.yaml"
	if err := os.WriteFile(p, []byte("executors: [/bin/sh]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
