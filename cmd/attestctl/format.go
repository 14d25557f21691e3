package main

import (
	"bytes"
	"crypto"
	"fmt"

	"github.com/spf13/pflag"

	"github.com/attestd/attestd/distribute"
)

// Forms attestctl writes signed things in (--format; docs/formats.md).
const (
	formatDSSE     = "dsse"
	formatSigstore = "sigstore"
)

// format is a --format flag: the form signed things are written in. A value
// other than dsse or sigstore is refused when the flag is parsed, before any
// call to the daemon.
type format string

func (f *format) String() string { return string(*f) }
func (f *format) Type() string   { return "format" }

func (f *format) Set(s string) error {
	if s != formatDSSE && s != formatSigstore {
		return fmt.Errorf("want %s or %s", formatDSSE, formatSigstore)
	}
	*f = format(s)
	return nil
}

// newFormat adds the flag name (default dsse) to fs; what says what it writes.
func newFormat(fs *pflag.FlagSet, name, what string) *format {
	f := format(formatDSSE)
	fs.Var(&f, name, "write "+what+" in `FORMAT`: dsse (DSSE envelopes) or sigstore (Sigstore bundles v0.3; docs/formats.md)")
	return &f
}

func (f *format) sigstore() bool { return *f == formatSigstore }

// encode returns b (DSSE envelopes and carrier lines, as attestd writes them)
// in the chosen form. keys are the signing keys besides the env keys that
// b's own attestations name.
func (f *format) encode(b []byte, keys ...crypto.PublicKey) ([]byte, error) {
	if !f.sigstore() {
		return b, nil
	}
	out, err := distribute.ToSigstore(b, keys)
	if err != nil {
		return nil, fmt.Errorf("write Sigstore bundles: %w", err)
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		out = bytes.TrimSuffix(out, []byte("\n")) // one envelope in, one bundle out
	}
	return out, nil
}
