package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/attestd/attestd/attest"
)

// Typed policy values: each parses and checks itself once, when the policy
// is read (with the line and key of any error), and is written back in the
// same form (Policy.Render).

// Hex16, Hex32 and Hex48 are fixed-size values written as hex digits.
type (
	Hex16 [16]byte
	Hex32 [32]byte
	Hex48 [48]byte
)

func unmarshalHex(dst []byte, text []byte) error {
	n, err := hex.Decode(dst, text)
	if err != nil || n != len(dst) || len(text) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits, got %q", 2*len(dst), text)
	}
	return nil
}

func (h Hex16) MarshalText() ([]byte, error)     { return []byte(hex.EncodeToString(h[:])), nil }
func (h *Hex16) UnmarshalText(text []byte) error { return unmarshalHex(h[:], text) }
func (h Hex32) MarshalText() ([]byte, error)     { return []byte(hex.EncodeToString(h[:])), nil }
func (h *Hex32) UnmarshalText(text []byte) error { return unmarshalHex(h[:], text) }
func (h Hex48) MarshalText() ([]byte, error)     { return []byte(hex.EncodeToString(h[:])), nil }
func (h *Hex48) UnmarshalText(text []byte) error { return unmarshalHex(h[:], text) }

// HexBytes is a byte string written as hex digits (a register value, whose
// size depends on the register).
type HexBytes []byte

func (h HexBytes) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h)), nil }

func (h *HexBytes) UnmarshalText(text []byte) error {
	b, err := hex.DecodeString(string(text))
	if err != nil || len(b) == 0 {
		return fmt.Errorf("want hex digits, got %q", text)
	}
	*h = b
	return nil
}

// Nonce is a verifier's nonce: 1 to 64 bytes, written as hex digits.
type Nonce []byte

func (n Nonce) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(n)), nil }

func (n *Nonce) UnmarshalText(text []byte) error {
	b, err := hex.DecodeString(string(text))
	if err != nil || attest.CheckNonce(b) != nil {
		return fmt.Errorf("want 2 to %d hex digits (a 1-%d byte nonce), got %q", 2*attest.MaxNonceSize, attest.MaxNonceSize, text)
	}
	*n = b
	return nil
}

// Duration is a positive duration written as Go writes them ("15m", "2h").
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil || v < 0 {
		return fmt.Errorf("want a duration such as 15m or 2h, got %q", text)
	}
	*d = Duration(v)
	return nil
}

// RootVerity is storage.root_verity: a dm-verity root hash, or the
// roothash of the signed reference values (RootVerityReference).
type RootVerity struct {
	Hash      [sha256.Size]byte
	Reference bool
}

// RootVerityReference as storage.root_verity takes the root hash from the
// reference values (reference.file).
const RootVerityReference = "reference"

func (r RootVerity) MarshalText() ([]byte, error) {
	if r.Reference {
		return []byte(RootVerityReference), nil
	}
	return []byte(hex.EncodeToString(r.Hash[:])), nil
}

func (r *RootVerity) UnmarshalText(text []byte) error {
	if string(text) == RootVerityReference {
		*r = RootVerity{Reference: true}
		return nil
	}
	if unmarshalHex(r.Hash[:], text) != nil {
		return fmt.Errorf("want a dm-verity root hash (64 hex digits) or %q, got %q", RootVerityReference, text)
	}
	r.Reference = false
	return nil
}
