package verify

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/measure"
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

// e2eInitrdSHA256 is the SHA-256 of the .initrd section of the e2e image's
// UKI (the same initrd in every bake of it).
const e2eInitrdSHA256 = "c99f8acfa75ab8028ea9a02a113e1d93e4bc180bdbd70fc2ddaf115d74070280"

// TestAppraiseBootPCRs: the boot PCRs (7: Secure Boot off; 9: the UKI's
// command line and initrd; 12: nothing) predicted as attestctl reference
// predicts them match the real boot, and a difference is explained by the
// firmware event log's event.
func TestAppraiseBootPCRs(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "e2e", "bundle.intoto.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := scai.DecodeBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := os.ReadFile(filepath.Join("testdata", "e2e", "reference.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{TrustedAKs: []crypto.PublicKey{readPublicKeyFile(t, "ak.pem")},
		Verifiers: []attest.Verifier{tpm.Verifier{Now: func() time.Time { return time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC) }}}}
	initrd, _ := hex.DecodeString(e2eInitrdSHA256)
	predict := func(t *testing.T, cmdline string, pcr12 []measure.FirmwareEvent) *ReferenceValues {
		rv, err := OpenReference(ref, []crypto.PublicKey{readPublicKeyFile(t, "bake-key.pub.pem")})
		if err != nil {
			t.Fatal(err)
		}
		pcr9 := measure.KernelEvents(crypto.SHA256, cmdline, nil)
		pcr9 = append(pcr9, measure.FirmwareEvent{PCR: 9, Type: "EV_EVENT_TAG", What: measure.LinuxInitrd, Digest: initrd})
		rv.Boot.Events = map[string][]BootEvent{}
		for i, evs := range map[int][]measure.FirmwareEvent{7: measure.SecureBootOffEvents(crypto.SHA256), 9: pcr9, 12: pcr12} {
			rv.PCRs[strconv.Itoa(i)] = hex.EncodeToString(measure.PCRValue(crypto.SHA256, evs))
			rv.Boot.Events[strconv.Itoa(i)] = BootEvents(evs)
		}
		return rv
	}
	other := measure.FirmwareEvent{PCR: 12, Type: "EV_IPL", What: "a credential", Digest: make([]byte, 32)}
	for _, tc := range []struct {
		name    string
		rv      func(t *testing.T) *ReferenceValues
		failing string
		detail  string
	}{
		{"as booted", func(t *testing.T) *ReferenceValues { return predict(t, e2eCmdlineOf(t, ref), nil) }, "", ""},
		{"another command line", func(t *testing.T) *ReferenceValues { return predict(t, e2eCmdlineOf(t, ref)+" x=1", nil) },
			CheckRefPCRPrefix + "9", `first difference at firmware-log event 0 of PCR 9: EV_EVENT_TAG "LOADED_IMAGE::LoadOptions" 9c47e439db256e52…`},
		{"a credential expected", func(t *testing.T) *ReferenceValues {
			return predict(t, e2eCmdlineOf(t, ref), []measure.FirmwareEvent{other})
		}, CheckRefPCRPrefix + "12", `the firmware log ends after 0 event(s); the reference has EV_IPL "a credential" next`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rv := tc.rv(t)
			r := Envelope(b.Envelopes[0], MaterialOf(b), opts)
			for _, c := range r.Appraise(rv) {
				if !strings.HasPrefix(c.Name, CheckRefPCRPrefix) {
					continue
				}
				if c.OK == (c.Name == tc.failing) {
					t.Errorf("%s ok=%v: %s", c.Name, c.OK, c.Detail)
				}
				if c.Name == tc.failing && !strings.Contains(c.Detail, tc.detail) {
					t.Errorf("%s detail %q, want it to contain %q", c.Name, c.Detail, tc.detail)
				}
			}
		})
	}
}

func e2eCmdlineOf(t *testing.T, ref []byte) string {
	t.Helper()
	rv, err := OpenReference(ref, []crypto.PublicKey{readPublicKeyFile(t, "bake-key.pub.pem")})
	if err != nil {
		t.Fatal(err)
	}
	return rv.Boot.Cmdline
}

// TestPolicyBootRequirements: require.firmware_log passes on the real boot
// (its log replays), require.secure_boot fails (Secure Boot was off).
func TestPolicyBootRequirements(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "e2e", "bundle.intoto.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy([]byte("version: 1\nrequire: {firmware_log: true, secure_boot: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	p.Resolved = &Resolved{TrustedAKs: []crypto.PublicKey{readPublicKeyFile(t, "ak.pem")}}
	ev := Evaluate(p, []Input{{Name: "e2e", Raw: raw}}, Config{Verifiers: []attest.Verifier{tpm.Verifier{}}})
	got := map[string]attest.Check{}
	for _, c := range ev.Bundles[0].Policy {
		got[c.Name] = c
	}
	if c := got[CheckPolicyFirmwareLog]; !c.OK {
		t.Errorf("%s: %s", c.Name, c.Detail)
	}
	if c := got[CheckPolicySecureBoot]; c.OK || !strings.Contains(c.Detail, "Secure Boot was off") {
		t.Errorf("%s ok=%v: %s", c.Name, c.OK, c.Detail)
	}
}

// testdata/e2e-attack holds one e2e run (images/e2e.sh) of the good image
// and of two attacks on it that took effect in the guest (docs/reference-
// values.md, "Attacks the e2e shows"): a boot entry whose load options
// override the UKI's command line, and a credential dropped on the ESP.
// Verifiers before PCR 9 and 12 were predicted accepted both.
func TestAppraiseBootAttacks(t *testing.T) {
	dir := filepath.Join("testdata", "e2e-attack")
	key := func(name string) crypto.PublicKey {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	ref, err := os.ReadFile(filepath.Join(dir, "reference.intoto.json"))
	if err != nil {
		t.Fatal(err)
	}
	rv, err := OpenReference(ref, []crypto.PublicKey{key("bake-key.pub.pem")})
	if err != nil {
		t.Fatal(err)
	}
	if rv.Boot.SecureBoot != SecureBootOff || rv.PCRs["7"] == "" || rv.PCRs["9"] == "" || rv.PCRs["12"] != strings.Repeat("0", 64) {
		t.Fatalf("reference values without the boot PCRs: %v", rv.PCRs)
	}
	opts := Options{TrustedAKs: []crypto.PublicKey{key("ak.pem")}, Verifiers: []attest.Verifier{tpm.Verifier{}}}
	for _, tc := range []struct {
		bundle string
		want   map[string]string // failing check → part of its detail
	}{
		{"good", nil},
		{"cmdline-override", map[string]string{
			CheckRefPCRPrefix + "12": `the reference predicts no event; the firmware log has 1, the first: EV_IPL "console=ttyS0 roothash=`,
			CheckRefPCRPrefix + "9":  `first difference at firmware-log event 0 of PCR 9: EV_EVENT_TAG "LOADED_IMAGE::LoadOptions"`,
		}},
		{"esp-credential", map[string]string{
			CheckRefPCRPrefix + "12": `the first: EV_IPL "Global credentials initrd"`,
			CheckRefPCRPrefix + "9":  `first difference at firmware-log event 1 of PCR 9: EV_EVENT_TAG "Linux initrd"`,
		}},
	} {
		t.Run(tc.bundle, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, tc.bundle+".intoto.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			b, err := scai.DecodeBundle(raw)
			if err != nil {
				t.Fatal(err)
			}
			for i, env := range b.Envelopes {
				// The build's provenance (no measurements) gets no checks.
				for _, c := range Appraise(env, MaterialOf(b), opts, rv) {
					detail, failing := tc.want[c.Name]
					if c.OK == failing {
						t.Errorf("envelope %d: %s ok=%v: %s", i, c.Name, c.OK, c.Detail)
					} else if failing && !strings.Contains(c.Detail, detail) {
						t.Errorf("envelope %d: %s detail %q, want it to contain %q", i, c.Name, c.Detail, detail)
					}
				}
			}
		})
	}
}
