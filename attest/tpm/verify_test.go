package tpm

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// loadGolden reads testdata/evidence.json (simulator evidence; refresh
// with go test -run TestSimulatorEvidenceShape -update).
func loadGolden(t testing.TB) (*attest.Evidence, attest.VerifyOptions) {
	t.Helper()
	data, err := os.ReadFile("testdata/evidence.json")
	if err != nil {
		t.Fatal(err)
	}
	var g goldenEvidence
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	env, err := x509.ParsePKIXPublicKey(g.EnvKey)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := x509.ParsePKIXPublicKey(g.AK)
	if err != nil {
		t.Fatal(err)
	}
	return g.Evidence, attest.VerifyOptions{Binding: g.Binding, EnvKey: env, TrustedAKs: []crypto.PublicKey{ak}}
}

func checkNames(checks []attest.Check) []string {
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
	}
	return names
}

func TestVerifyGolden(t *testing.T) {
	ev, opts := loadGolden(t)
	claims, checks := Verifier{}.Verify(ev, opts)
	if diff := cmp.Diff(checkOrder, checkNames(checks)); diff != "" {
		t.Errorf("check names (-want +got):\n%s", diff)
	}
	if claims == nil {
		t.Fatalf("no claims: %+v", checks)
	}
	if _, ok := claims.Registers[measure.Register{Kind: measure.PCR, Index: 13}]; !ok || len(claims.Registers) != 13 {
		t.Errorf("claims registers: %v", claims.Registers)
	}
	if c := checks[len(checks)-1]; !c.Skip || c.Detail != "no firmware event log (machine has none)" {
		t.Errorf("firmware-log check without a log: %+v", c)
	}
}

func replacePart(ev *attest.Evidence, name string, data []byte) *attest.Evidence {
	out := &attest.Evidence{Backend: ev.Backend}
	for _, p := range ev.Parts {
		if p.Name == name {
			if data == nil {
				continue
			}
			p.Data = data
		}
		out.Parts = append(out.Parts, p)
	}
	return out
}

func TestVerifyFailures(t *testing.T) {
	ev, opts := loadGolden(t)
	quote, _ := ev.MustPart(PartQuoteInfo)
	certify, _ := ev.MustPart(PartCertifyInfo)
	certifySig, _ := ev.MustPart(PartCertifySignature)
	otherBinding := opts
	otherBinding.Binding[31] ^= 0xff
	noTrust := opts
	noTrust.TrustedAKs = nil
	for _, tc := range []struct {
		name string
		ev   *attest.Evidence
		opts attest.VerifyOptions
		// want maps check name to a substring of its detail; checks not
		// listed must pass.
		want map[string]string
	}{
		{"other binding", ev, otherBinding, map[string]string{CheckQualifyingData: "not the expected binding"}},
		{"untrusted AK", ev, noTrust, map[string]string{CheckAKTrusted: "pin the AK"}},
		{"no quote", replacePart(ev, PartQuoteInfo, nil), opts, map[string]string{
			CheckQuoteSignature: "evidence part missing",
			CheckQualifyingData: "not checked: quote-signature failed",
			CheckPCRDigest:      "not checked: quote-signature failed",
			CheckFirmwareLog:    "not checked: pcr-digest failed",
		}},
		{"certify as quote", replacePart(ev, PartQuoteInfo, certify), opts, map[string]string{
			CheckQuoteSignature: "type",
			CheckQualifyingData: "not checked",
			CheckPCRDigest:      "not checked",
			CheckFirmwareLog:    "not checked",
		}},
		{"quote as certify", replacePart(replacePart(ev, PartCertifyInfo, quote), PartCertifySignature, certifySig), opts, map[string]string{
			CheckEnvKeyCertified: "type",
		}},
		{"no AK", replacePart(ev, PartAKPublic, nil), opts, map[string]string{
			CheckEnvKeyCertified: "missing",
			CheckAKTrusted:       "missing",
			CheckQuoteSignature:  "missing",
			CheckQualifyingData:  "not checked",
			CheckPCRDigest:       "not checked",
			CheckFirmwareLog:     "not checked",
		}},
		{"AK public area changed, same key", replacePart(ev, PartAKPublic, func() []byte {
			pub, err := tpm2.DecodePublic(mustPart(t, ev, PartAKPublic))
			if err != nil {
				t.Fatal(err)
			}
			pub.Attributes ^= tpm2.FlagNoDA
			raw, err := pub.Encode()
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}()), opts, map[string]string{
			CheckEnvKeyCertified: "not the one that signed",
			CheckQuoteSignature:  "not the one that signed",
			CheckQualifyingData:  "not checked",
			CheckPCRDigest:       "not checked",
			CheckFirmwareLog:     "not checked",
		}},
		{"env key is AK", replacePart(ev, PartEnvKeyPublic, mustPart(t, ev, PartAKPublic)), opts, map[string]string{
			CheckEnvKeyCertified: "certifies a different key",
		}},
		{"PCR left out", replacePart(ev, PartPCRs, []byte(`{"hash":"sha256","pcrs":{"0":"`+strings.Repeat("00", 32)+`"}}`)), opts, map[string]string{
			CheckPCRDigest:   "but the quote covers",
			CheckFirmwareLog: "not checked",
		}},
		{"empty event log", func() *attest.Evidence {
			e := replacePart(ev, "", nil)
			e.Parts = append(e.Parts, attest.Part{Name: PartEventLog, MediaType: MediaTypeEventLog})
			return e
		}(), opts, map[string]string{CheckFirmwareLog: "empty"}},
		{"nil evidence", nil, opts, map[string]string{
			CheckEnvKeyCertified: "missing", CheckAKTrusted: "missing", CheckQuoteSignature: "missing",
			CheckQualifyingData: "not checked", CheckPCRDigest: "not checked", CheckFirmwareLog: "not checked",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims, checks := Verifier{}.Verify(tc.ev, tc.opts)
			if claims != nil {
				t.Error("claims for bad evidence")
			}
			if diff := cmp.Diff(checkOrder, checkNames(checks)); diff != "" {
				t.Errorf("check names (-want +got):\n%s", diff)
			}
			for _, c := range checks {
				want, bad := tc.want[c.Name]
				switch {
				case bad && c.OK:
					t.Errorf("check %s passed, want failure with %q", c.Name, want)
				case bad && !strings.Contains(c.Detail, want):
					t.Errorf("check %s detail %q, want it to contain %q", c.Name, c.Detail, want)
				case !bad && c.Failed():
					t.Errorf("check %s failed: %s", c.Name, c.Detail)
				}
			}
		})
	}
}

func mustPart(t *testing.T, ev *attest.Evidence, name string) []byte {
	d, err := ev.MustPart(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// FuzzVerify mutates one part of good evidence at a time: Verify must never
// panic, and must never return claims for evidence whose authenticated
// parts changed.
func FuzzVerify(f *testing.F) {
	ev, opts := loadGolden(f)
	for i, p := range ev.Parts {
		f.Add(uint8(i), p.Data)
		f.Add(uint8(i), p.Data[:len(p.Data)/2])
	}
	f.Add(uint8(len(ev.Parts)), []byte{}) // an event log part
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		bad := replacePart(ev, "", nil)
		var orig []byte
		if int(which) < len(bad.Parts) {
			orig = bad.Parts[which].Data
			bad.Parts[which].Data = data
		} else {
			bad.Parts = append(bad.Parts, attest.Part{Name: PartEventLog, MediaType: MediaTypeEventLog, Data: data})
		}
		claims, checks := Verifier{}.Verify(bad, opts)
		if !slices.Equal(checkNames(checks), checkOrder) {
			t.Fatalf("check names %v", checkNames(checks))
		}
		// The JSON of tpm/pcrs may be re-spelled, and ECDSA signatures have
		// equivalent encodings; the bytes they vouch for may not change.
		malleable := []string{PartPCRs, PartQuoteSignature, PartCertifySignature}
		if claims != nil && orig != nil && string(orig) != string(data) && !slices.Contains(malleable, bad.Parts[which].Name) {
			t.Fatalf("claims for changed part %q", bad.Parts[which].Name)
		}
	})
}

// goldenEvidence is testdata/evidence.json: simulator evidence and what
// verifies it, the seed of the fuzz corpus.
type goldenEvidence struct {
	Evidence *attest.Evidence
	Binding  attest.Binding
	EnvKey   []byte // PKIX DER
	AK       []byte // PKIX DER
}
