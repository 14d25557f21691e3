package attest

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// Quote batching: admission (attest) callers that wait for the device at the
// same time are answered by one quote. Each caller's own binding,
// Bind(PurposeAttest, keyDigest, nonce), becomes a leaf of a Merkle tree
// (the RFC 6962 shape, with leaf and node hashes domain-separated), and the
// quote's qualifying data is BatchBinding over the root and the leaf count.
// Each caller gets the shared attestation plus its inclusion proof. See
// docs/formats.md, "Batched admissions".

// PurposeAttestBatch is the purpose hashed into the binding of a batch: it
// keeps a batch root from ever reading as one caller's nonce.
const PurposeAttestBatch Purpose = "attest-batch"

// MaxBatch bounds the leaves of one batch (and so the proof length: at most
// 6 hashes).
const MaxBatch = 64

// ErrInclusion: an inclusion proof does not lead from the leaf to the root.
var ErrInclusion = errors.New("inclusion proof does not match the batch root")

// Leaf and node prefixes (RFC 6962, section 2.1).
const (
	leafPrefix = 0x00
	nodePrefix = 0x01
)

// BatchLeaf is the Merkle leaf hash of one caller's binding:
//
//	SHA-256( 0x00 ‖ Bind(PurposeAttest, keyDigest, nonce) )
func BatchLeaf(keyDigest [32]byte, nonce []byte) [32]byte {
	b := Bind(PurposeAttest, keyDigest, nonce)
	var buf [33]byte
	buf[0] = leafPrefix
	copy(buf[1:], b[:])
	return sha256.Sum256(buf[:])
}

func nodeHash(l, r [32]byte) [32]byte {
	var buf [65]byte
	buf[0] = nodePrefix
	copy(buf[1:], l[:])
	copy(buf[33:], r[:])
	return sha256.Sum256(buf[:])
}

// split is the largest power of two smaller than n (n ≥ 2).
func split(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// MerkleRoot is the root of the tree over leaves (RFC 6962 MTH with the
// leaves already hashed). It panics on an empty list.
func MerkleRoot(leaves [][32]byte) [32]byte {
	switch len(leaves) {
	case 0:
		panic("attest: MerkleRoot of no leaves")
	case 1:
		return leaves[0]
	}
	k := split(len(leaves))
	return nodeHash(MerkleRoot(leaves[:k]), MerkleRoot(leaves[k:]))
}

// InclusionProof is the audit path of leaf i (RFC 6962 PATH), bottom up.
func InclusionProof(leaves [][32]byte, i int) [][32]byte {
	if len(leaves) <= 1 {
		return nil
	}
	k := split(len(leaves))
	if i < k {
		return append(InclusionProof(leaves[:k], i), MerkleRoot(leaves[k:]))
	}
	return append(InclusionProof(leaves[k:], i-k), MerkleRoot(leaves[:k]))
}

// RootFromProof recomputes the root of a tree of size leaves from leaf at
// index and its audit path (RFC 9162, section 2.1.3.2). It fails unless the
// path has exactly the length the index and size call for.
func RootFromProof(leaf [32]byte, index, size int, path [][32]byte) ([32]byte, error) {
	if size < 1 || size > MaxBatch || index < 0 || index >= size {
		return [32]byte{}, fmt.Errorf("%w: leaf %d of a batch of %d (1 to %d leaves)", ErrInclusion, index, size, MaxBatch)
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range path {
		if sn == 0 {
			return [32]byte{}, fmt.Errorf("%w: path is longer than a batch of %d needs", ErrInclusion, size)
		}
		if fn&1 == 1 || fn == sn {
			r = nodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = nodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return [32]byte{}, fmt.Errorf("%w: path is shorter than a batch of %d needs", ErrInclusion, size)
	}
	return r, nil
}

// BatchBinding is the qualifying data / report data of a batch of size
// leaves with the given root:
//
//	Bind(PurposeAttestBatch, keyDigest, root ‖ u32be(size))
func BatchBinding(keyDigest, root [32]byte, size int) Binding {
	data := binary.BigEndian.AppendUint32(root[:], uint32(size))
	return Bind(PurposeAttestBatch, keyDigest, data)
}
