package tdxtest_test

import (
	"testing"
	"time"

	"github.com/attestd/attestd/attest/tdx/tdxtest"
	"github.com/google/go-tdx-guest/verify"
)

func TestFake(t *testing.T) {
	now := time.Date(2025, 1, 2, 0, 0, 0, 0, time.UTC)
	d, err := tdxtest.New(now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := d.GetRawQuote([64]byte{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	ts := &verify.TimeSet{PckCertChain: now}
	if err := verify.RawTdxQuote(raw, &verify.Options{TrustedRoots: d.Roots(), Now: ts}); err != nil {
		t.Fatalf("fake root: %v", err)
	}
	if err := verify.RawTdxQuote(raw, &verify.Options{Now: ts}); err == nil {
		t.Fatal("real root accepted the fake")
	}
}
