package attest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
)

func leaves(n int) [][32]byte {
	kd := sha256.Sum256([]byte("key"))
	out := make([][32]byte, n)
	for i := range out {
		out[i] = BatchLeaf(kd, []byte(fmt.Sprintf("nonce-%d", i)))
	}
	return out
}

// TestMerkleVector pins the tree shape of docs/formats.md for three leaves:
// root = node(node(l0, l1), l2).
func TestMerkleVector(t *testing.T) {
	l := leaves(3)
	node := func(a, b [32]byte) [32]byte {
		return sha256.Sum256(append(append([]byte{1}, a[:]...), b[:]...))
	}
	if got, want := MerkleRoot(l), node(node(l[0], l[1]), l[2]); got != want {
		t.Fatalf("root = %x, want %x", got, want)
	}
	kd := sha256.Sum256([]byte("key"))
	b := Bind(PurposeAttest, kd, []byte("nonce-0"))
	if want := sha256.Sum256(append([]byte{0}, b[:]...)); l[0] != want {
		t.Fatalf("leaf = %x, want %x", l[0], want)
	}
	if MerkleRoot(l[:1]) != l[0] {
		t.Fatal("the root of one leaf is the leaf")
	}
}

func TestInclusionEveryLeaf(t *testing.T) {
	for n := 1; n <= MaxBatch; n++ {
		l := leaves(n)
		root := MerkleRoot(l)
		for i := range l {
			path := InclusionProof(l, i)
			got, err := RootFromProof(l[i], i, n, path)
			if err != nil || got != root {
				t.Fatalf("n=%d i=%d: root %x, %v; want %x", n, i, got, err, root)
			}
			// Another leaf, index or size must not lead to the root.
			if r, err := RootFromProof(l[(i+1)%n], i, n, path); n > 1 && err == nil && r == root {
				t.Fatalf("n=%d i=%d: a foreign leaf verifies", n, i)
			}
			if n > 1 {
				if r, err := RootFromProof(l[i], (i+1)%n, n, path); err == nil && r == root {
					t.Fatalf("n=%d i=%d: a wrong index verifies", n, i)
				}
			}
		}
	}
}

func TestRootFromProofRejects(t *testing.T) {
	l := leaves(5)
	path := InclusionProof(l, 2)
	for _, tc := range []struct {
		name        string
		index, size int
		path        [][32]byte
	}{
		{"index past size", 5, 5, path},
		{"negative index", -1, 5, path},
		{"size zero", 0, 0, nil},
		{"size over the bound", 2, MaxBatch + 1, path},
		{"path too long", 2, 5, append(path, path[0])},
		{"path too short", 2, 5, path[:len(path)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := RootFromProof(l[2], tc.index, tc.size, tc.path); !errors.Is(err, ErrInclusion) {
				t.Fatalf("err = %v, want ErrInclusion", err)
			}
		})
	}
}

// A node can never pass for a leaf: the prefixes differ.
func TestLeafNodeSeparation(t *testing.T) {
	l := leaves(2)
	root := MerkleRoot(l)
	if _, err := RootFromProof(root, 0, 1, nil); err != nil {
		t.Fatal(err)
	}
	kd := sha256.Sum256([]byte("key"))
	if BatchBinding(kd, root, 2) == Bind(PurposeAttest, kd, append(root[:], 0, 0, 0, 2)) {
		t.Fatal("a batch binding equals a single binding over the same bytes")
	}
	if BatchBinding(kd, root, 2) == BatchBinding(kd, root, 3) {
		t.Fatal("the size is not bound")
	}
}
