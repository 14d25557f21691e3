package vcache

import (
	"crypto/x509"
	"time"
)

// Window is when every certificate of one verified chain is valid.
type Window struct{ NotBefore, NotAfter time.Time }

// Contains reports whether t is within the window.
func (w Window) Contains(t time.Time) bool { return !t.Before(w.NotBefore) && !t.After(w.NotAfter) }

// ChainWindows returns, for each chain x509 verified, the window in which all
// its certificates are valid. A cached chain is used only at a time one of
// them contains (AnyContains); outside, it is verified again.
func ChainWindows(chains [][]*x509.Certificate) []Window {
	var out []Window
	for _, chain := range chains {
		w := Window{NotBefore: chain[0].NotBefore, NotAfter: chain[0].NotAfter}
		for _, c := range chain[1:] {
			if c.NotBefore.After(w.NotBefore) {
				w.NotBefore = c.NotBefore
			}
			if c.NotAfter.Before(w.NotAfter) {
				w.NotAfter = c.NotAfter
			}
		}
		out = append(out, w)
	}
	return out
}

// AnyContains reports whether one of ws contains t.
func AnyContains(ws []Window, t time.Time) bool {
	for _, w := range ws {
		if w.Contains(t) {
			return true
		}
	}
	return false
}
