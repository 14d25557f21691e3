package verify_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verify"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
)

func svrCases() []resultCase {
	return []resultCase{
		{"svr-admission.json", verify.SVRPredicateType, snpEval(iDispatch, true, nil),
			[]string{verify.PropertyAdmitted, "ATTESTD_BUILDENV_LEVEL_1"}},
		{"svr-dispatch.json", verify.SVRPredicateType, snpEval(iComplete, true, nil),
			[]string{verify.PropertyAdmitted, "ATTESTD_DISPATCHED_TO_BUILD:build-1", "ATTESTD_BUILDENV_LEVEL_3"}},
		// A failed decision lists no property.
		{"svr-admission-failed.json", verify.SVRPredicateType, snpEval(iDispatch, true, func(o *verify.Options) {
			o.Nonces = map[attest.Purpose][]byte{attest.PurposeAttest: []byte("another nonce")}
		}), []string{}},
	}
}

func TestSVRGolden(t *testing.T) { runResultCases(t, svrCases()) }

// TestSVRDecode: the strict v0.2 decoder rejects what the spec does not
// allow.
func TestSVRDecode(t *testing.T) {
	good := `{"verifier":{"id":"https://example.com/v","policies":[{"uri":"https://example.com/p","digest":{"sha256":"` + goldenPolicy + `"}}]},"timeCreated":"2025-01-02T00:00:00Z","properties":["X_OK"]}`
	s, err := verify.DecodeSVR([]byte(good))
	if err != nil {
		t.Fatalf("good SVR: %v", err)
	}
	if s.VerifierID != "https://example.com/v" || len(s.Policies) != 1 || s.Policies[0].GetDigest()["sha256"] != goldenPolicy || len(s.Properties) != 1 {
		t.Errorf("decoded %+v", s)
	}
	if _, err := verify.DecodeSVR([]byte(`{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`)); err != nil {
		t.Errorf("empty policies and properties: %v", err)
	}
	for name, bad := range map[string]string{
		"no-policies":       `{"verifier":{"id":"https://example.com/v"},"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`,
		"v0.1-policy":       `{"verifier":{"id":"https://example.com/v","policy":{},"policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`,
		"no-properties":     `{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"2025-01-02T00:00:00Z"}`,
		"null-properties":   `{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":null}`,
		"no-time":           `{"verifier":{"id":"https://example.com/v","policies":[]},"properties":[]}`,
		"bad-time":          `{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"yesterday","properties":[]}`,
		"no-verifier":       `{"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`,
		"id-not-uri":        `{"verifier":{"id":"attestctl","policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`,
		"unknown-field":     `{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":[],"extra":1}`,
		"policy-not-rd":     `{"verifier":{"id":"https://example.com/v","policies":[{"path":"/etc/p"}]},"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`,
		"policy-bad-digest": `{"verifier":{"id":"https://example.com/v","policies":[{"digest":{"sha256":"ab"}}]},"timeCreated":"2025-01-02T00:00:00Z","properties":[]}`,
		"empty-property":    `{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":[""]}`,
		"trailing-data":     `{"verifier":{"id":"https://example.com/v","policies":[]},"timeCreated":"2025-01-02T00:00:00Z","properties":[]} {}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := verify.DecodeSVR([]byte(bad)); !errors.Is(err, verify.ErrInvalidSVR) {
				t.Errorf("err %v, want ErrInvalidSVR", err)
			}
		})
	}
}

// FuzzDecodeSVR: an SVR predicate either fails as ErrInvalidSVR or decodes
// to one that encodes and decodes back to itself.
func FuzzDecodeSVR(f *testing.F) {
	for _, name := range []string{"svr-admission.json", "svr-dispatch.json", "svr-admission-failed.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata", "results", name))
		if err != nil {
			f.Fatal(err)
		}
		var st struct {
			Predicate json.RawMessage `json:"predicate"`
		}
		if err := json.Unmarshal(raw, &st); err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(st.Predicate))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		s, err := verify.DecodeSVR(raw)
		if err != nil {
			if !errors.Is(err, verify.ErrInvalidSVR) {
				t.Fatalf("error %v is not ErrInvalidSVR", err)
			}
			return
		}
		out, err := s.MarshalJSON()
		if err != nil {
			t.Fatalf("a decoded SVR does not encode: %v", err)
		}
		again, err := verify.DecodeSVR(out)
		if err != nil {
			t.Fatalf("re-encoded SVR does not decode: %v\n%s", err, out)
		}
		if diff := cmp.Diff(s, again, protocmp.Transform()); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
