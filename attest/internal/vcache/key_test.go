package vcache

import (
	"crypto/x509"
	"testing"
	"time"
)

// Length prefixes keep field boundaries: ("ab", "c") and ("a", "bc") differ.
func TestKeyFields(t *testing.T) {
	a := NewKey("test")
	a.Str("ab")
	a.Str("c")
	b := NewKey("test")
	b.Str("a")
	b.Str("bc")
	if a.Sum() == b.Sum() {
		t.Fatal("two sequences of fields hash the same")
	}
	c := NewKey("other")
	c.Str("ab")
	c.Str("c")
	if a.Sum() == c.Sum() {
		t.Fatal("the label does not change the key")
	}
}

func TestChainWindows(t *testing.T) {
	day := func(d int) time.Time { return time.Date(2026, 1, d, 0, 0, 0, 0, time.UTC) }
	leaf := &x509.Certificate{NotBefore: day(5), NotAfter: day(20)}
	root := &x509.Certificate{NotBefore: day(1), NotAfter: day(15)}
	ws := ChainWindows([][]*x509.Certificate{{leaf, root}})
	if len(ws) != 1 || !ws[0].NotBefore.Equal(day(5)) || !ws[0].NotAfter.Equal(day(15)) {
		t.Fatalf("windows %+v, want [5, 15]", ws)
	}
	for d, want := range map[int]bool{4: false, 5: true, 15: true, 16: false} {
		if got := AnyContains(ws, day(d)); got != want {
			t.Errorf("day %d: contained %v, want %v", d, got, want)
		}
	}
}
