package distribute_test

import (
	"crypto"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/scai"
)

// FuzzOpenBundle parses arbitrary bytes as a Sigstore bundle. Whatever opens
// must be an envelope attestd's own DSSE parser accepts, named by a hint
// that is its keyid; and sigstore-go (VerifyBundle) and attestd's DSSE
// verifier (scai.VerifySignature) must agree on its signature. The seeds are
// real bundles: the e2e build's chain and reference values.
func FuzzOpenBundle(f *testing.F) {
	things := realThings(f)
	var keys []crypto.PublicKey
	for _, th := range things {
		raw, err := distribute.NewBundle(th.env, th.key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		keys = append(keys, th.key)
	}
	f.Add([]byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		env, hint, err := distribute.OpenBundle(raw)
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if _, verr := distribute.VerifyBundle(raw, keys); verr == nil {
				t.Fatalf("VerifyBundle accepts what OpenBundle refuses (%v)", err)
			}
			return
		}
		if len(env.Signatures) != 1 || env.Signatures[0].KeyID != hint {
			t.Fatalf("opened envelope has signatures %+v, hint %s", env.Signatures, hint)
		}
		js, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := scai.ParseEnvelope(js); err != nil {
			t.Fatalf("the opened envelope does not parse as DSSE: %v", err)
		}
		verified, err := distribute.VerifyBundle(raw, keys)
		key := keyNamed(t, keys, hint)
		switch {
		case errors.Is(err, distribute.ErrKeyHint):
			if key != nil {
				t.Fatalf("hint %s names a key given, but: %v", hint, err)
			}
		case errors.Is(err, distribute.ErrSignature):
			if scai.VerifySignature(env, key) == nil {
				t.Fatalf("sigstore-go refuses a signature attestd's DSSE verifier accepts: %v", err)
			}
		case err != nil:
			t.Fatalf("VerifyBundle refuses what OpenBundle opened: %v", err)
		default:
			if diff := cmp.Diff(env, verified); diff != "" {
				t.Fatalf("VerifyBundle and OpenBundle disagree on the envelope (-open +verify):\n%s", diff)
			}
			if err := scai.VerifySignature(verified, key); err != nil {
				t.Fatalf("sigstore-go accepts a signature attestd's DSSE verifier refuses: %v", err)
			}
		}
	})
}

func isSentinel(err error) bool {
	for _, s := range []error{distribute.ErrBundle, distribute.ErrMediaType, distribute.ErrKeyHint, distribute.ErrSignature} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// keyNamed returns the key among keys whose hint is hint, or nil.
func keyNamed(t *testing.T, keys []crypto.PublicKey, hint string) crypto.PublicKey {
	for _, k := range keys {
		if h, err := distribute.KeyHint(k); err != nil {
			t.Fatal(err)
		} else if h == hint {
			return k
		}
	}
	return nil
}
