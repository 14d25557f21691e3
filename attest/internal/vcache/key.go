package vcache

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// Key builds a cache key: SHA-256 over length-prefixed fields, so that no
// two sequences of fields hash the same bytes. Start it with a label that
// names what is cached.
type Key struct{ h hash.Hash }

// NewKey starts a key with label.
func NewKey(label string) *Key {
	k := &Key{h: sha256.New()}
	k.Str(label)
	return k
}

// Uint adds n.
func (k *Key) Uint(n uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	k.h.Write(b[:])
}

// Bytes adds b, length-prefixed.
func (k *Key) Bytes(b []byte) {
	k.Uint(uint64(len(b)))
	k.h.Write(b)
}

// Str adds s, length-prefixed.
func (k *Key) Str(s string) { k.Bytes([]byte(s)) }

// Sum is the key.
func (k *Key) Sum() [32]byte {
	var out [32]byte
	k.h.Sum(out[:0])
	return out
}
