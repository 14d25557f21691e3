package verify

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
)

// testdata/e2e holds what one good run of images/e2e.sh produced: the bundle
// attestd made in the guest (QEMU + OVMF + swtpm, real measured boot), the
// image's signed reference values, the bake key and the AK pinned from the
// vTPM before the boot. Refresh by copying images/e2e-out/good/{result/
// bundle.intoto.jsonl,reference.intoto.json,bake-key.pub.pem} and
// images/e2e-out/ak.pem.

func readPublicKeyFile(t *testing.T, name string) crypto.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "e2e", name))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", name)
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k
}

// TestAppraiseRealBoot compares a real attestation with the reference values
// predicted at bake time, and checks that each kind of changed image fails
// on its own check.
func TestAppraiseRealBoot(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "e2e", "bundle.intoto.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := scai.DecodeBundle(raw)
	if err != nil || len(b.Envelopes) < 4 {
		t.Fatalf("bundle: %v", err)
	}
	envs, m := b.Envelopes, MaterialOf(b)
	ref, err := os.ReadFile(filepath.Join("testdata", "e2e", "reference.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	open := func(t *testing.T) *ReferenceValues {
		rv, err := OpenReference(ref, []crypto.PublicKey{readPublicKeyFile(t, "bake-key.pub.pem")})
		if err != nil {
			t.Fatal(err)
		}
		return rv
	}
	// The evidence has no certificates that expire, but keep the clock fixed.
	verifiers := []attest.Verifier{tpm.Verifier{Now: func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }}}
	opts := Options{TrustedAKs: []crypto.PublicKey{readPublicKeyFile(t, "ak.pem")}, Verifiers: verifiers}
	want := []string{CheckRefAgentRegister, CheckRefRootHash, CheckRefPCRPrefix + "4", CheckRefPCRPrefix + "11"}
	flip := func(h string) string {
		return strings.Repeat("0", 63) + map[bool]string{true: "1", false: "0"}[h[63] == '0']
	}

	tests := []struct {
		name    string
		mutate  func(*ReferenceValues, *Options)
		failing []string // checks that must fail; the others pass
	}{
		{"good image", func(*ReferenceValues, *Options) {}, nil},
		{"other attestd binary or config", func(rv *ReferenceValues, _ *Options) { rv.Agent.Launch = flip(rv.Agent.Launch) },
			[]string{CheckRefAgentRegister, CheckRefRootHash}}, // no authenticated launch events: root hash not checked
		{"other root file system", func(rv *ReferenceValues, _ *Options) { rv.RootHash = strings.Repeat("ab", 32) },
			[]string{CheckRefRootHash}},
		{"other UKI", func(rv *ReferenceValues, _ *Options) { rv.PCRs["4"] = flip(rv.PCRs["4"]) },
			[]string{CheckRefPCRPrefix + "4"}},
		{"other kernel command line", func(rv *ReferenceValues, _ *Options) { rv.PCRs["11"] = flip(rv.PCRs["11"]) },
			[]string{CheckRefPCRPrefix + "11"}},
		{"untrusted AK", func(_ *ReferenceValues, o *Options) {
			o.TrustedAKs = []crypto.PublicKey{readPublicKeyFile(t, "bake-key.pub.pem")}
		},
			want},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rv, o := open(t), opts
			tc.mutate(rv, &o)
			for i, env := range envs {
				op, err := scai.Open(env)
				if errors.Is(err, scai.ErrPredicateType) {
					// The build's provenance, signed by the env key: no measurements.
					if c := Appraise(env, m, o, rv); c != nil {
						t.Errorf("envelope %d is no attestation, but got reference checks %v", i, c)
					}
					continue
				}
				if err != nil {
					t.Fatalf("envelope %d: %v", i, err)
				}
				got := map[string]attest.Check{}
				for _, c := range Appraise(env, m, o, rv) {
					got[c.Name] = c
				}
				for _, n := range want {
					c, ok := got[n]
					if !ok {
						t.Errorf("%s: check %s missing", op.Attestation.Purpose, n)
						continue
					}
					shouldFail := false
					for _, f := range tc.failing {
						shouldFail = shouldFail || f == n
					}
					if c.OK == shouldFail {
						t.Errorf("%s: %s ok=%v, want %v (%s)", op.Attestation.Purpose, n, c.OK, !shouldFail, c.Detail)
					}
				}
			}
		})
	}
}
