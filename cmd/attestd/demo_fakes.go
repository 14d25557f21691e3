//go:build attestd_demo_fakes

// Demo-only: built with -tags attestd_demo_fakes (scripts/demo.sh does,
// into a separate binary), never in the default build. It lets
// `DEMO_BACKEND=snp|tdx make demo` run the daemon on the test-only fake
// SEV-SNP / TDX devices, which really sign with fake vendor roots.

package main

import (
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tdx/tdxtest"
)

// init installs fake devices when ATTESTD_DEMO_FAKE_TEE names one, and
// writes their fake roots (PEM) to ATTESTD_DEMO_FAKE_ROOTS for attestctl.
func init() {
	kind := os.Getenv("ATTESTD_DEMO_FAKE_TEE")
	if kind == "" {
		return
	}
	if err := installDemoFakes(kind, os.Getenv("ATTESTD_DEMO_FAKE_ROOTS")); err != nil {
		fmt.Fprintln(os.Stderr, "attestd: demo fakes:", err)
		os.Exit(1)
	}
}

func installDemoFakes(kind, rootsOut string) error {
	created := time.Now().Add(-time.Hour)
	var roots []byte
	teeDevices.fake = true
	teeDevices.snp = func() (snp.QuoteProvider, error) { return nil, attest.ErrNoDevice }
	teeDevices.tdx = func() (tdx.Config, error) { return tdx.Config{}, attest.ErrNoDevice }
	switch kind {
	case "snp":
		dev, err := snptest.New(created)
		if err != nil {
			return err
		}
		teeDevices.snp = func() (snp.QuoteProvider, error) { return dev, nil }
		for _, r := range dev.Roots()[snptest.ProductLine] {
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.ProductCerts.Ark.Raw})...)
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.ProductCerts.Ask.Raw})...)
		}
	case "tdx":
		dev, err := tdxtest.New(created)
		if err != nil {
			return err
		}
		teeDevices.tdx = func() (tdx.Config, error) { return tdx.Config{Provider: dev, RTMRs: dev}, nil }
		roots = dev.RootPEM()
	default:
		return fmt.Errorf("ATTESTD_DEMO_FAKE_TEE=%q: want snp or tdx", kind)
	}
	if rootsOut == "" {
		return nil
	}
	return os.WriteFile(rootsOut, roots, 0o644)
}
