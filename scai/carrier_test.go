package scai_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// batchProofs builds n callers' proofs for one env key.
func batchProofs(t testing.TB, kd [32]byte, n int) ([32]byte, []*scai.InclusionProof) {
	var nonces [][]byte
	var leaves [][32]byte
	for i := 0; i < n; i++ {
		nonce := []byte(fmt.Sprintf("caller nonce %02d", i))
		nonces = append(nonces, nonce)
		leaves = append(leaves, attest.BatchLeaf(kd, nonce))
	}
	root := attest.MerkleRoot(leaves)
	var out []*scai.InclusionProof
	for i := range leaves {
		out = append(out, &scai.InclusionProof{KeyDigest: kd, Nonce: nonces[i], Index: i, Size: n, Path: attest.InclusionProof(leaves, i), Root: root})
	}
	return root, out
}

func TestBatchedStatementRoundTrip(t *testing.T) {
	k := seededKey(t, "batch")
	a := newAttestation(t, attest.PurposeAttest, k.Public())
	kd, _ := attest.KeyDigest(k.Public())
	root, proofs := batchProofs(t, kd, 5)
	a.Nonce, a.Batch = nil, &scai.Batch{Root: root, Size: 5}
	a.Binding = attest.BatchBinding(kd, root, 5)
	o, _, err := openVerified(signed(t, k, a))
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Attestation.Batch; got == nil || *got != *a.Batch || o.Attestation.Nonce != nil {
		t.Fatalf("batch = %+v, nonce %x", got, o.Attestation.Nonce)
	}
	for _, p := range proofs {
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := scai.ParseInclusionProof(b)
		if err != nil {
			t.Fatalf("proof %d: %v", p.Index, err)
		}
		if got.Root != root || !bytes.Equal(got.Nonce, p.Nonce) {
			t.Fatalf("proof %d decodes to %+v", p.Index, got)
		}
	}
	// A batch binding that does not match the root is refused at build time.
	a.Binding[0] ^= 1
	if _, err := scai.NewStatement(a); !errors.Is(err, scai.ErrBinding) {
		t.Fatalf("NewStatement with a wrong batch binding: %v", err)
	}
}

func TestParseInclusionProofRejects(t *testing.T) {
	kd := [32]byte{1}
	_, proofs := batchProofs(t, kd, 3)
	good, _ := json.Marshal(proofs[1])
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"other nonce", edit(func(m map[string]any) { m["nonce"] = "00" }), attest.ErrInclusion},
		{"other index", edit(func(m map[string]any) { m["leafIndex"] = 0 }), attest.ErrInclusion},
		{"other key", edit(func(m map[string]any) { m["envKeySha256"] = strings.Repeat("00", 32) }), attest.ErrInclusion},
		{"upper-case hex", edit(func(m map[string]any) { m["batchRoot"] = strings.ToUpper(m["batchRoot"].(string)) }), scai.ErrEnvelope},
		{"unknown field", edit(func(m map[string]any) { m["extra"] = 1 }), scai.ErrEnvelope},
		{"empty nonce", edit(func(m map[string]any) { m["nonce"] = "" }), attest.ErrInclusion},
		{"huge batch", edit(func(m map[string]any) { m["batchSize"] = 1 << 30 }), attest.ErrInclusion},
		{"trailing data", append(append([]byte{}, good...), []byte(" {}")...), scai.ErrEnvelope},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := scai.ParseInclusionProof(tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestDecodeBundleCarriers(t *testing.T) {
	k := seededKey(t, "carrier")
	kd, _ := attest.KeyDigest(k.Public())
	log := []byte("0123456789 an event log")
	a := newAttestation(t, attest.PurposeLaunch, k.Public())
	a.Log = scai.RefTo(log[:10])
	env := signed(t, k, a)
	_, proofs := batchProofs(t, kd, 2)
	proof, err := json.Marshal(proofs[0])
	if err != nil {
		t.Fatal(err)
	}
	raw := scai.AttestationLines(env, log, proof)
	b, err := scai.DecodeBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Envelopes) != 1 || len(b.Logs) != 1 || len(b.Proofs) != 1 {
		t.Fatalf("decoded %d envelopes, %d logs, %d proofs", len(b.Envelopes), len(b.Logs), len(b.Proofs))
	}
	got, ok := scai.FindLog(b.Logs, a.Log)
	if !ok || !bytes.Equal(got, log[:10]) {
		t.Fatalf("FindLog = %q, %v", got, ok)
	}
	if _, ok := scai.FindLog(b.Logs, scai.RefTo([]byte("other"))); ok {
		t.Fatal("FindLog found a log that does not match")
	}
	if _, ok := scai.FindLog(b.Logs, scai.LogRef{SHA256: a.Log.SHA256, Size: 1 << 40}); ok {
		t.Fatal("FindLog found a prefix longer than the log")
	}
	// A carrier is accepted unsigned only in a bundle, and only for the
	// two carrier types; an unsigned attestation is still refused.
	if _, err := scai.ParseEnvelope(scai.Carrier(scai.PayloadTypeCEL, log)); !errors.Is(err, scai.ErrEnvelope) {
		t.Fatalf("ParseEnvelope of a carrier: %v", err)
	}
	unsigned := scai.Carrier(scai.PayloadType, []byte(`{"_type":"x"}`))
	if _, err := scai.ParseBundle(scai.EncodeBundle(env, unsigned)); !errors.Is(err, scai.ErrEnvelope) {
		t.Fatalf("ParseBundle with an unsigned statement: %v", err)
	}
	other := scai.Carrier("application/x-other", []byte("x"))
	if _, err := scai.ParseBundle(scai.EncodeBundle(env, other)); err == nil {
		t.Fatal("ParseBundle accepted an unsigned line of an unknown type")
	}
	bad := scai.Carrier(scai.PayloadTypeInclusionProof, []byte(`{"nonce":"zz"}`))
	if _, err := scai.DecodeBundle(scai.EncodeBundle(env, bad)); err == nil {
		t.Fatal("DecodeBundle accepted a malformed proof")
	}
}

// An attestation from before format 2 (event log inline) is refused with a
// message that says what it is.
func TestOpenRefusesInlineLog(t *testing.T) {
	k := seededKey(t, "old")
	env := signed(t, k, newAttestation(t, attest.PurposeLaunch, k.Public()))
	e, err := scai.ParseEnvelope(env)
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := e.DecodeB64Payload()
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	attrs := st["predicate"].(map[string]any)["attributes"].([]any)
	last := attrs[len(attrs)-1].(map[string]any)["evidence"].(map[string]any)
	delete(last, "annotations")
	last["content"] = base64.StdEncoding.EncodeToString([]byte{0, 0, 0, 1, 2, 3})
	payload, _ = json.Marshal(st)
	e.Payload = base64.StdEncoding.EncodeToString(payload)
	_, err = scai.Open(e)
	if !errors.Is(err, scai.ErrStatement) || !strings.Contains(err.Error(), "older than format 2") {
		t.Fatalf("Open of an inline-log attestation: %v", err)
	}
}

func FuzzParseInclusionProof(f *testing.F) {
	_, proofs := batchProofs(f, [32]byte{7}, 7)
	for _, p := range proofs {
		b, _ := json.Marshal(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := scai.ParseInclusionProof(b)
		if err != nil {
			if !errors.Is(err, scai.ErrEnvelope) && !errors.Is(err, attest.ErrInclusion) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		// What parses re-encodes to something that parses to the same proof.
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := scai.ParseInclusionProof(again)
		if err != nil || q.Root != p.Root || q.Index != p.Index || !bytes.Equal(q.Nonce, p.Nonce) {
			t.Fatalf("re-encoded proof: %+v, %v", q, err)
		}
	})
}
