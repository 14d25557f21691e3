package distribute_test

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/scai"
)

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestChainBothForms: the e2e's chain in the Sigstore form has one bundle per
// signed line, each verified by sigstore-go when read back, and reads back as
// exactly the DSSE file it was made from.
func TestChainBothForms(t *testing.T) {
	orig := readFile(t, "../verify/testdata/e2e/bundle.intoto.jsonl")
	sig, err := distribute.ToSigstore(orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(sig)), "\n")
	bundles := 0
	for _, l := range lines {
		if strings.Contains(l, distribute.MediaTypeBundle) {
			bundles++
		}
	}
	if bundles != 5 || len(lines) != 6 {
		t.Fatalf("%d lines, %d Sigstore bundles; want 6 lines (launch, attest, dispatch, completion, provenance, event log), 5 bundles", len(lines), bundles)
	}
	in := distribute.ChainInput("chain", sig)
	if !bytes.Equal(in.Raw, orig) {
		t.Errorf("the Sigstore form does not read back as the DSSE file it was made from")
	}
	if len(in.Form) != 5 {
		t.Fatalf("%d form checks, want 5", len(in.Form))
	}
	for _, c := range in.Form {
		if c.Name != distribute.CheckSigstore || !c.OK {
			t.Errorf("check %s failed: %s", c.Name, c.Detail)
		}
	}
	// Converting again changes nothing; the DSSE form passes as it is.
	if again, err := distribute.ToSigstore(sig, nil); err != nil || !bytes.Equal(again, sig) {
		t.Errorf("ToSigstore of the Sigstore form: %v, changed %v", err, !bytes.Equal(again, sig))
	}
	if in := distribute.ChainInput("chain", orig); !bytes.Equal(in.Raw, orig) || in.Form != nil {
		t.Errorf("a DSSE chain does not pass as it is")
	}
}

// TestChainRefused: a bundle whose hint names another key, or whose
// envelope was tampered with, fails its sigstore-bundle check.
func TestChainRefused(t *testing.T) {
	orig := readFile(t, "../verify/testdata/e2e/bundle.intoto.jsonl")
	sig, err := distribute.ToSigstore(orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherHint, _ := distribute.KeyHint(newKey(t).Public())
	lines := bytes.Split(bytes.TrimSpace(sig), []byte("\n"))
	for _, tc := range []struct {
		name string
		line int // 0-based
		edit func(m map[string]any)
	}{
		{"dispatch hint names another key", 2, func(m map[string]any) {
			m["verificationMaterial"].(map[string]any)["publicKey"].(map[string]any)["hint"] = otherHint
		}},
		{"provenance signature tampered", 4, func(m map[string]any) {
			sig := dsseOf(m)["signatures"].([]any)[0].(map[string]any)
			sig["sig"] = "MEUCIQ" + sig["sig"].(string)[6:]
		}},
		{"launch v0.2 media type", 0, func(m map[string]any) {
			m["mediaType"] = "application/vnd.dev.sigstore.bundle+json;version=0.2"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed := append([][]byte{}, lines...)
			changed[tc.line] = edit(t, lines[tc.line], tc.edit)
			in := distribute.ChainInput("chain", bytes.Join(changed, []byte("\n")))
			var failed []string
			for _, c := range in.Form {
				if c.Failed() {
					failed = append(failed, c.Detail)
				}
			}
			if len(failed) != 1 || !strings.HasPrefix(failed[0], fmt.Sprintf("line %d:", tc.line+1)) {
				t.Fatalf("failed form checks %q, want one, for line %d", failed, tc.line+1)
			}
		})
	}
}

func TestToSigstoreNeedsTheKey(t *testing.T) {
	ref := readFile(t, "../verify/testdata/e2e/reference.intoto.json")
	if _, err := distribute.ToSigstore(ref, nil); !errors.Is(err, distribute.ErrKeyHint) {
		t.Fatalf("reference values without the bake key: %v, want ErrKeyHint", err)
	}
	bake := readPEMKey(t, "../verify/testdata/e2e/bake-key.pub.pem")
	sig, err := distribute.ToSigstore(ref, []crypto.PublicKey{bake})
	if err != nil {
		t.Fatal(err)
	}
	back, err := distribute.ToDSSE(sig, []crypto.PublicKey{bake})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(append(back, '\n'), ref) {
		t.Errorf("reference values do not read back as the DSSE envelope they were made from")
	}
	if _, err := distribute.ToDSSE(sig, []crypto.PublicKey{newKey(t).Public()}); !errors.Is(err, distribute.ErrKeyHint) {
		t.Errorf("ToDSSE with another key: %v, want ErrKeyHint", err)
	}
	if same, err := distribute.ToDSSE(ref, nil); err != nil || !bytes.Equal(same, ref) {
		t.Errorf("ToDSSE of a DSSE envelope: %v, changed %v", err, !bytes.Equal(same, ref))
	}
}

// TestChainKeys: a signed statement in a chain is checked with the
// completion's env key; without a completion it cannot be.
func TestChainKeys(t *testing.T) {
	orig := readFile(t, "../verify/testdata/e2e/bundle.intoto.jsonl")
	sig, err := distribute.ToSigstore(orig, nil)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(sig), []byte("\n"))
	// launch, provenance, event log: no completion names the key.
	in := distribute.ChainInput("chain", bytes.Join([][]byte{lines[0], lines[4], lines[5]}, []byte("\n")))
	if len(in.Form) != 2 || !in.Form[0].OK || in.Form[1].OK {
		t.Fatalf("form checks %+v: want launch ok, provenance failed", in.Form)
	}
	var m map[string]any
	if err := json.Unmarshal(in.Raw[:bytes.IndexByte(in.Raw, '\n')], &m); err != nil || m["payloadType"] != scai.PayloadType {
		t.Errorf("the launch line is not a DSSE envelope in Raw: %v", err)
	}
}
