package distribute

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// CheckSigstore names the check of one Sigstore bundle of a chain in
// verify's report (Report.Form).
const CheckSigstore = "sigstore-bundle"

// A file attestd writes, in either form, is one JSON value (an envelope or
// bundle, in any layout) or JSON Lines: each signed line a DSSE envelope or a
// Sigstore bundle, the event log and inclusion proofs as scai.Carrier lines.
// docs/formats.md describes both forms.

// item is one JSON value of such a file.
type item struct {
	line     int    // 1-based line of the file it starts on
	raw      []byte // as in the file
	sigstore bool   // a Sigstore bundle, not a DSSE envelope or carrier
	env      *dsse.Envelope
	hint     string // of a Sigstore bundle
	err      error  // parsing it
}

// items splits raw as scai.ParseBundle does (one JSON value, or JSON Lines if
// the first non-blank line is a complete JSON value) and parses each item in
// its form. A DSSE item that does not parse keeps its error for verify to
// report; a Sigstore one that does not open keeps OpenBundle's.
func items(raw []byte) []*item {
	lines := bytes.Split(raw, []byte("\n"))
	first := 0
	for first < len(lines) && len(bytes.TrimSpace(lines[first])) == 0 {
		first++
	}
	if first < len(lines) && !json.Valid(lines[first]) {
		return []*item{parseItem(first+1, raw)}
	}
	var out []*item
	for i := first; i < len(lines); i++ {
		if l := bytes.TrimSpace(lines[i]); len(l) > 0 {
			out = append(out, parseItem(i+1, l))
		}
	}
	return out
}

func parseItem(line int, raw []byte) *item {
	it := &item{line: line, raw: raw, sigstore: isSigstore(raw)}
	if it.sigstore {
		it.env, it.hint, it.err = OpenBundle(raw)
		return it
	}
	envs, err := scai.ParseBundle(raw)
	if err == nil && len(envs) == 1 {
		it.env = envs[0]
	} else if err == nil {
		err = fmt.Errorf("%d envelopes in one item", len(envs))
	}
	it.err = err
	return it
}

// isSigstore says whether raw is a JSON object naming a Sigstore bundle media
// type (of any version: OpenBundle refuses the ones it does not read).
func isSigstore(raw []byte) bool {
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	return json.Unmarshal(raw, &probe) == nil && strings.HasPrefix(probe.MediaType, sigstoreMediaTypes)
}

// sigstoreMediaTypes begins the media type of every Sigstore bundle version.
const sigstoreMediaTypes = "application/vnd.dev.sigstore.bundle"

// signed says whether the item is a signed envelope (not a carrier line).
func (it *item) signed() bool { return it.env != nil && len(it.env.Signatures) > 0 }

// chainKeys returns the env keys the file's attestd attestations name (not
// yet authenticated: verify ties each to its evidence) and the completion's,
// which signs the build's statements.
func chainKeys(its []*item) (keys []crypto.PublicKey, completion crypto.PublicKey) {
	for _, it := range its {
		if !it.signed() {
			continue
		}
		if op, err := scai.Open(it.env); err == nil {
			keys = append(keys, op.Attestation.EnvKey)
			if op.Attestation.Purpose == attest.PurposeComplete {
				completion = op.Attestation.EnvKey
			}
		}
	}
	return keys, completion
}

// ToSigstore rewrites a file of DSSE envelopes (as attestctl writes them) in
// the Sigstore form: each signed envelope becomes a Sigstore bundle (NewBundle)
// with the key its signature's keyid names, among keys and the env keys of the
// file's own attestd attestations; carrier lines and Sigstore bundles stay as
// they are. The result is JSON Lines.
func ToSigstore(raw []byte, keys []crypto.PublicKey) ([]byte, error) {
	its := items(raw)
	envKeys, _ := chainKeys(its)
	keys = append(envKeys, keys...)
	lines := make([][]byte, 0, len(its))
	for _, it := range its {
		if it.err != nil {
			return nil, fmt.Errorf("line %d: %w", it.line, it.err)
		}
		if it.sigstore || !it.signed() {
			lines = append(lines, it.raw)
			continue
		}
		b, err := bundleOf(it.env, keys)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", it.line, err)
		}
		lines = append(lines, b)
	}
	return scai.EncodeBundle(lines...), nil
}

// bundleOf is NewBundle with the key among keys that env's keyid names.
func bundleOf(env *dsse.Envelope, keys []crypto.PublicKey) ([]byte, error) {
	if len(env.Signatures) != 1 || env.Signatures[0].KeyID == "" {
		return nil, fmt.Errorf("%w: want one signature with a keyid", ErrBundle)
	}
	pub, err := keyFor(env.Signatures[0].KeyID, keys)
	if err != nil {
		return nil, err
	}
	return NewBundle(env, pub)
}

// ChainInput is a chain file (attestctl verify's FILE) as verify's Input.
// A file in the DSSE form passes as it is. In the Sigstore form, sigstore-go
// verifies each bundle (VerifyBundle) with the key that must have signed it:
// an attestd attestation's env key from its own statement, a signed
// statement's the completion's env key. Each is a CheckSigstore check in
// Input.Form, and Raw becomes the DSSE form (each bundle replaced by its
// envelope), which verify then checks as always.
func ChainInput(name string, raw []byte) verify.Input {
	in := verify.Input{Name: name, Raw: raw}
	// In the DSSE form everything but the field names is base64: a file
	// without the media type holds no Sigstore bundle, and is not parsed here.
	if !bytes.Contains(raw, []byte(sigstoreMediaTypes)) {
		return in
	}
	its := items(raw)
	if !hasSigstore(its) {
		return in
	}
	_, completion := chainKeys(its)
	lines := make([][]byte, 0, len(its))
	for _, it := range its {
		if !it.sigstore || it.err != nil {
			lines = append(lines, it.raw)
			if it.sigstore {
				in.Form = append(in.Form, attest.Check{Name: CheckSigstore, Detail: fmt.Sprintf("line %d: %v", it.line, it.err)})
			}
			continue
		}
		in.Form = append(in.Form, checkChainBundle(it, completion))
		b, _ := json.Marshal(it.env) // strings only: cannot fail
		lines = append(lines, b)
	}
	in.Raw = scai.EncodeBundle(lines...)
	return in
}

func hasSigstore(its []*item) bool {
	for _, it := range its {
		if it.sigstore {
			return true
		}
	}
	return false
}

// checkChainBundle verifies one opened Sigstore bundle of a chain with the
// key that must have signed it.
func checkChainBundle(it *item, completion crypto.PublicKey) attest.Check {
	c := attest.Check{Name: CheckSigstore}
	op, err := scai.Open(it.env)
	what, key := "", crypto.PublicKey(nil)
	switch {
	case err == nil:
		what, key = string(op.Attestation.Purpose)+" attestation", op.Attestation.EnvKey
	case errors.Is(err, scai.ErrPredicateType) && completion != nil:
		what, key = "signed statement", completion
	case errors.Is(err, scai.ErrPredicateType):
		c.Detail = fmt.Sprintf("line %d: a signed statement, but no completion attestation names the env key that signs it", it.line)
		return c
	default:
		c.Detail = fmt.Sprintf("line %d: which key signed it is in its statement, which does not open: %v", it.line, err)
		return c
	}
	if _, err := VerifyBundle(it.raw, []crypto.PublicKey{key}); err != nil {
		c.Detail = fmt.Sprintf("line %d: %s: %v", it.line, what, err)
		return c
	}
	c.OK = true
	c.Detail = fmt.Sprintf("line %d: %s, key hint %s… is its env key, signature verified by sigstore-go", it.line, what, it.hint[:16])
	return c
}

// ToDSSE returns a signed statement read from a file (reference values,
// image provenance) as the DSSE envelope (JSON) verify reads: a Sigstore
// bundle is verified with keys (VerifyBundle) and replaced by its envelope;
// anything else is returned as it is.
func ToDSSE(raw []byte, keys []crypto.PublicKey) ([]byte, error) {
	if !bytes.Contains(raw, []byte(sigstoreMediaTypes)) || !isSigstore(raw) {
		return raw, nil
	}
	env, err := VerifyBundle(raw, keys)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(env) // strings only: cannot fail
	return b, nil
}
