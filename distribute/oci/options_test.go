package oci_test

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/distribute/oci"
)

func TestPlainHTTPOnlyForLoopback(t *testing.T) {
	for _, tc := range []struct {
		ref string
		ok  bool
	}{
		{"127.0.0.1:5000/a/b", true},
		{"localhost:5000/a", true},
		{"[::1]:5000/a", true},
		{"127.8.9.10/a", true},
		{"registry.example:5000/a", false},
		{"10.0.0.1:5000/a", false},
		{"localhost.example.com/a", false},
	} {
		_, err := oci.Open(tc.ref, oci.Options{PlainHTTP: true, Credential: noCredentials})
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, oci.ErrPlainHTTP) {
			t.Errorf("Open(%q, PlainHTTP): %v, want ok=%v", tc.ref, err, tc.ok)
		}
	}
	if _, err := oci.Open("registry.example/a", oci.Options{Credential: noCredentials}); err != nil {
		t.Errorf("Open over HTTPS: %v", err)
	}
}

func TestParseReference(t *testing.T) {
	const d = "sha256:5def1b68491f3afee0195b5f6b131c087159be11c7959f4eb0ad9c495acc2527"
	for _, tc := range []struct {
		in, repo string
		ok       bool
	}{
		{"oci://127.0.0.1:5000/attestd/e2e@" + d, "127.0.0.1:5000/attestd/e2e", true},
		{"registry.example/x@" + d, "registry.example/x", true},
		{"oci://registry.example/x:tag", "", false},
		{"oci://registry.example/x@sha512:" + d[7:], "", false},
		{"oci://registry.example/x@sha256:abc", "", false},
		{"oci://x@" + d, "", false},
	} {
		repo, got, err := oci.ParseReference(tc.in)
		if tc.ok && (err != nil || repo != tc.repo || got.String() != d) || !tc.ok && !errors.Is(err, oci.ErrReference) {
			t.Errorf("ParseReference(%q) = %q, %q, %v", tc.in, repo, got, err)
		}
	}
}

// TestFromBundleEitherForm: the e2e bundle in the Sigstore form gives the
// same referrers as in the DSSE form; a bundle signed by another key than
// its hint names is refused.
func TestFromBundleEitherForm(t *testing.T) {
	raw, err := os.ReadFile(e2eBundle)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := distribute.ToSigstore(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	fromDSSE, fromSigstore := readBuild(t), mustFromBundle(t, sig)
	if diff := cmp.Diff(fromDSSE, fromSigstore, protocmp.Transform()); diff != "" {
		t.Errorf("the two forms give other referrers (-dsse +sigstore):\n%s", diff)
	}
	broken := bytes.Replace(sig, []byte(`"sig":"`), []byte(`"sig":"AAAA`), 1)
	if _, err := oci.FromBundle(broken); !errors.Is(err, oci.ErrBundle) {
		t.Errorf("a Sigstore bundle whose signature does not verify: %v, want ErrBundle", err)
	} else {
		t.Log(err)
	}
}

func mustFromBundle(t *testing.T, raw []byte) *oci.Build {
	t.Helper()
	b, err := oci.FromBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
