package tpm

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/attest"
)

func marshalPKIX(k crypto.PublicKey) ([]byte, error) { return x509.MarshalPKIXPublicKey(k) }

func TestOpenNoDevice(t *testing.T) {
	dir := t.TempDir()
	for name, cfg := range map[string]Config{
		"auto":   {autoDevices: []string{filepath.Join(dir, "tpmrm0"), filepath.Join(dir, "tpm0")}},
		"path":   {Device: filepath.Join(dir, "tpm0")},
		"socket": {Device: "unix:" + filepath.Join(dir, "swtpm.sock")},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(cfg)
			if !errors.Is(err, attest.ErrNoDevice) {
				t.Fatalf("Open(%+v) = %v, want ErrNoDevice", cfg, err)
			}
			t.Log(err)
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		ok   bool
		want int
	}{
		{Config{}, true, 13},
		{Config{PCR: 14}, true, 14},
		{Config{PCR: 16}, false, 0},
		{Config{PCR: 23}, false, 0},
		{Config{PCR: 24}, false, 0},
		{Config{PCR: -1}, false, 0},
		{Config{BootPCRs: []int{0, 24}}, false, 0},
	} {
		got, err := tc.cfg.validate()
		if (err == nil) != tc.ok {
			t.Errorf("validate(%+v) error = %v, want ok=%v", tc.cfg, err, tc.ok)
			continue
		}
		if tc.ok && got.PCR != tc.want {
			t.Errorf("validate(%+v).PCR = %d, want %d", tc.cfg, got.PCR, tc.want)
		}
	}
	got, _ := Config{PCR: 12}.validate()
	if q := got.quotedPCRs(); len(q) != 12 || q[len(q)-1] != 12 {
		t.Errorf("quotedPCRs with agent PCR 12 = %v, want boot PCRs without duplicates", q)
	}
}

// pinAK trusts exactly the backend's AK.
func pinAK(t *testing.T, b attest.Backend) attest.VerifyOptions {
	return attest.VerifyOptions{TrustedAKs: []crypto.PublicKey{b.(*Backend).AKPublic()}}
}

func benchEvidence(b *testing.B, be *Backend) {
	ctx := context.Background()
	var binding attest.Binding
	b.ResetTimer()
	for b.Loop() {
		if _, err := be.Evidence(ctx, binding); err != nil {
			b.Fatal(err)
		}
	}
}
