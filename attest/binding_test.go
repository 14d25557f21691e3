package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestBindVector pins the binding formula of docs/formats.md: a change here
// breaks every verifier in the field.
func TestBindVector(t *testing.T) {
	kd := sha256.Sum256([]byte("key"))
	got := Bind(PurposeAttest, kd, []byte("nonce"))
	// SHA-256("attestd binding v1" ‖ 0 ‖ u16be(6) ‖ "attest" ‖ kd ‖ SHA-256("nonce")), computed by hand:
	h := sha256.New()
	h.Write([]byte("attestd binding v1\x00\x00\x06attest"))
	h.Write(kd[:])
	n := sha256.Sum256([]byte("nonce"))
	h.Write(n[:])
	if want := h.Sum(nil); hex.EncodeToString(got[:]) != hex.EncodeToString(want) {
		t.Fatalf("Bind = %x, want %x", got, want)
	}
	if Bind(PurposeLaunch, kd, []byte("nonce")) == got || Bind(PurposeAttest, sha256.Sum256(nil), []byte("nonce")) == got ||
		Bind(PurposeAttest, kd, []byte("nonce2")) == got {
		t.Fatal("purpose, key or data does not change the binding")
	}
}

func TestBuildData(t *testing.T) {
	var d [32]byte
	d[0] = 0xaa
	got := BuildData("b-1", d, []byte{1, 2})
	want := append(append([]byte{0, 3, 'b', '-', '1'}, d[:]...), 1, 2)
	if string(got) != string(want) {
		t.Fatalf("BuildData = %x, want %x", got, want)
	}
	// The length prefix keeps (id, digest) pairs from colliding.
	if string(BuildData("b", d, nil)) == string(BuildData("b\xaa", [32]byte{}, nil)[:35]) {
		t.Fatal("ambiguous encoding")
	}
}

func TestReportData(t *testing.T) {
	b := Binding{1}
	kd := sha256.Sum256([]byte("k"))
	rd := ReportData(b, kd, nil)
	if [32]byte(rd[:32]) != b || [32]byte(rd[32:]) != kd {
		t.Fatalf("ReportData without register = %x", rd)
	}
	withReg := ReportData(b, kd, []byte{9})
	if withReg == rd || [32]byte(withReg[:32]) != b {
		t.Fatalf("ReportData with register = %x", withReg)
	}
}

func TestCheckBuildIDAndNonce(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{{"build-1", true}, {strings.Repeat("x", 256), true}, {"", false}, {strings.Repeat("x", 257), false}, {"a b", false}, {"a\x7f", false}, {"é", false}} {
		if err := CheckBuildID(tc.id); (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBuildID)) {
			t.Errorf("CheckBuildID(%q) = %v", tc.id, err)
		}
	}
	for _, n := range [][]byte{nil, {}, make([]byte, 65)} {
		if !errors.Is(CheckNonce(n), ErrNonceSize) {
			t.Errorf("CheckNonce(%d bytes) accepted", len(n))
		}
	}
	if CheckNonce(make([]byte, 64)) != nil {
		t.Error("64-byte nonce refused")
	}
}
