package distribute_test

import (
	"crypto"
	"os"
	"path/filepath"
	"testing"
	"time"

	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/attestd/attestd/distribute"
)

// TestSigstoreGoAccepts is the independent check: what NewBundle writes is
// read from a file and verified the way a sigstore-go user would (its own
// loader, a key ring keyed by the hint, its verifier with no transparency log
// and no timestamps), none of this package's code involved; the statement
// sigstore-go reports is the one signed. A key ring without the key, and a
// bundle for another key, are refused.
func TestSigstoreGoAccepts(t *testing.T) {
	for _, th := range realThings(t) {
		t.Run(th.name, func(t *testing.T) {
			raw, err := distribute.NewBundle(th.env, th.key)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "bundle.sigstore.json")
			if err := os.WriteFile(path, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			b, err := sgbundle.LoadJSONFromPath(path)
			if err != nil {
				t.Fatalf("sigstore-go does not load the bundle: %v", err)
			}
			if v, err := b.Version(); err != nil || v != "v0.3" {
				t.Fatalf("bundle version %q (%v), want v0.3", v, err)
			}
			hint, _ := distribute.KeyHint(th.key)
			res, err := sigstoreGoVerify(t, b, map[string]crypto.PublicKey{hint: th.key})
			if err != nil {
				t.Fatalf("sigstore-go refuses the bundle: %v", err)
			}
			if res.Statement == nil || len(res.Statement.GetSubject()) == 0 || res.Statement.GetPredicateType() == "" {
				t.Fatalf("sigstore-go reports no statement: %+v", res)
			}
			if got := string(*res.Signature.PublicKeyID); got != hint {
				t.Errorf("sigstore-go says key %q signed, want %q", got, hint)
			}
			other := newKey(t).Public()
			otherHint, _ := distribute.KeyHint(other)
			if _, err := sigstoreGoVerify(t, b, map[string]crypto.PublicKey{otherHint: other}); err == nil {
				t.Error("sigstore-go accepts the bundle with a key ring without its key")
			}
			if _, err := sigstoreGoVerify(t, b, map[string]crypto.PublicKey{hint: other}); err == nil {
				t.Error("sigstore-go accepts the bundle with another key under its hint")
			}
		})
	}
}

// sigstoreGoVerify verifies b with sigstore-go alone: trusted public keys
// by hint, no transparency log, no timestamps, the DSSE payload as the
// signed thing.
func sigstoreGoVerify(t *testing.T, b *sgbundle.Bundle, ring map[string]crypto.PublicKey) (*sgverify.VerificationResult, error) {
	t.Helper()
	keys := map[string]*root.ExpiringKey{}
	for hint, pub := range ring {
		v, err := signature.LoadVerifier(pub, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		keys[hint] = root.NewExpiringKey(v, time.Time{}, time.Time{})
	}
	v, err := sgverify.NewVerifier(root.NewTrustedPublicKeyMaterialFromMapping(keys), sgverify.WithNoObserverTimestamps())
	if err != nil {
		t.Fatal(err)
	}
	return v.Verify(b, sgverify.NewPolicy(sgverify.WithoutArtifactUnsafe(), sgverify.WithKey()))
}
