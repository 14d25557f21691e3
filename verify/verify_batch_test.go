package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// A proof handed in as Material (not read from a bundle, so not checked at
// parse time) whose path does not lead to the root is ignored: it cannot
// tie a nonce to a batch.
func TestCheckBatchIgnoresForgedProof(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := attest.KeyDigest(k.Public())
	leaves := [][32]byte{attest.BatchLeaf(kd, []byte("a")), attest.BatchLeaf(kd, []byte("b"))}
	root := attest.MerkleRoot(leaves)
	forged := &scai.InclusionProof{KeyDigest: kd, Nonce: []byte("victim"), Index: 0, Size: 2, Path: [][32]byte{leaves[1]}, Root: root}
	good := &scai.InclusionProof{KeyDigest: kd, Nonce: []byte("a"), Index: 0, Size: 2, Path: [][32]byte{leaves[1]}, Root: root}
	for _, tc := range []struct {
		name   string
		proofs []*scai.InclusionProof
		nonce  string
		ok     bool
	}{
		{"forged", []*scai.InclusionProof{forged}, "victim", false},
		{"forged beside a good one", []*scai.InclusionProof{forged, good}, "victim", false},
		{"good", []*scai.InclusionProof{forged, good}, "a", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Result{}
			r.checkBatch(&scai.Attestation{EnvKey: k.Public(), Batch: &scai.Batch{Root: root, Size: 2}}, tc.proofs, []byte(tc.nonce))
			if got := len(r.Failed()) == 0; got != tc.ok {
				t.Fatalf("verified %v, want %v: %+v", got, tc.ok, r.Checks)
			}
		})
	}
}
