package verify_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// The tamper corpus: each case changes a good bundle (or what the verifier
// expects) and names the check that must reject it. A case passes only if
// the evaluation fails and the named check is among the failed ones.

// Bundle positions (agent.Bundle order).
const (
	iLaunch = iota
	iAttest
	iDispatch
	iComplete
	iSigned
)

var (
	quoteCheck = map[string]string{"tpm": tpm.CheckQuoteSignature, "snp": snp.CheckReportSignature, "tdx": tdx.CheckQuoteSignature}
	bindCheck  = map[string]string{"tpm": tpm.CheckQualifyingData, "snp": snp.CheckReportData, "tdx": tdx.CheckReportData}
	keyCheck   = map[string]string{"tpm": tpm.CheckEnvKeyCertified, "snp": snp.CheckEnvKey, "tdx": tdx.CheckEnvKey}
	quotePart  = map[string]string{"tpm": tpm.PartQuoteInfo, "snp": snp.PartReport, "tdx": tdx.PartQuote}
)

// tampered is what a case hands to the verifier.
type tampered struct {
	inputs []verify.Input
	opts   verify.Options
	policy *verify.Policy
	now    time.Time
}

type tamperCase struct {
	name     string
	backends []string // nil: every backend
	want     func(backend string) string
	mutate   func(t *testing.T, f *fixtures, e *env) tampered
}

func fixed(name string) func(string) string { return func(string) string { return name } }

// one builds a tampered input from a changed bundle, verified with e's
// options.
func one(e *env, b [][]byte) tampered {
	return tampered{inputs: []verify.Input{{Name: "bundle", Raw: withLog(e, b)}}, opts: e.opts}
}

func cloneBundle(e *env) [][]byte {
	out := make([][]byte, len(e.bundle))
	for i, b := range e.bundle {
		out[i] = bytes.Clone(b)
	}
	return out
}

// envelope edits the DSSE envelope JSON.
func envelope(t *testing.T, raw []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// statement edits the payload of envelope raw; resigned with the env key
// when resign, else the old signature stays (and no longer verifies).
func statement(t *testing.T, e *env, raw []byte, resign bool, f func(st map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(m["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	f(st)
	payload, err = json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if !resign {
		m["payload"] = base64.StdEncoding.EncodeToString(payload)
		out, _ := json.Marshal(m)
		return out
	}
	out, err := scai.SignPayload(context.Background(), e.signer, payload)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func attrs(st map[string]any) []any {
	return st["predicate"].(map[string]any)["attributes"].([]any)
}

// part edits the content of the evidence or agent part called name (and
// its digest); f returning nil removes the part.
func part(t *testing.T, st map[string]any, name string, f func([]byte) []byte) {
	t.Helper()
	as := attrs(st)
	for i, a := range as {
		ev, ok := a.(map[string]any)["evidence"].(map[string]any)
		if !ok || ev["name"] != name {
			continue
		}
		data, _ := base64.StdEncoding.DecodeString(ev["content"].(string))
		data = f(bytes.Clone(data))
		if data == nil {
			st["predicate"].(map[string]any)["attributes"] = slices.Delete(as, i, i+1)
			return
		}
		ev["content"] = base64.StdEncoding.EncodeToString(data)
		d := sha256.Sum256(data)
		ev["digest"] = map[string]any{"sha256": hex.EncodeToString(d[:])}
		return
	}
	t.Fatalf("no part %q", name)
}

func conditions(st map[string]any) map[string]any {
	return attrs(st)[0].(map[string]any)["conditions"].(map[string]any)
}

// rebind recomputes the binding condition after the statement's data
// changed, so that only the evidence disagrees.
func rebind(t *testing.T, st map[string]any) {
	t.Helper()
	b, err := scai.ExpectedBinding(openLoose(t, st))
	if err != nil {
		t.Fatal(err)
	}
	conditions(st)["binding"] = hex.EncodeToString(b[:])
}

// openLoose rebuilds the Attestation from st ignoring the binding.
func openLoose(t *testing.T, st map[string]any) *scai.Attestation {
	t.Helper()
	c := conditions(st)
	a := &scai.Attestation{Purpose: attest.Purpose(c["purpose"].(string))}
	if n, ok := c["nonce"].(string); ok {
		a.Nonce, _ = hex.DecodeString(n)
	}
	key := attrs(st)[1].(map[string]any)["target"].(map[string]any)
	der, _ := base64.StdEncoding.DecodeString(key["content"].(string))
	pub, err := parsePKIX(der)
	if err != nil {
		t.Fatal(err)
	}
	a.EnvKey = pub
	if id, ok := c["buildId"].(string); ok {
		a.Build = &scai.Build{ID: id}
		for _, at := range attrs(st) {
			am := at.(map[string]any)
			rdJSON, _ := json.Marshal(am["target"])
			switch am["attribute"] {
			case scai.AttrBuildRequest, scai.AttrBuildInput, scai.AttrBuildOutput:
				rd := descriptor(t, rdJSON)
				switch am["attribute"] {
				case scai.AttrBuildRequest:
					a.Build.Request = append(a.Build.Request, rd)
				case scai.AttrBuildInput:
					a.Build.Inputs = append(a.Build.Inputs, rd)
				default:
					a.Build.Outputs = append(a.Build.Outputs, rd)
				}
			}
		}
	}
	return a
}

// celRecords splits a CEL into its records (4 TLVs each).
func celRecords(b []byte) [][]byte {
	var out [][]byte
	for off := 0; off < len(b); {
		start := off
		for range 4 {
			n := int(binary.BigEndian.Uint32(b[off+1 : off+5]))
			off += 5 + n
		}
		out = append(out, b[start:off])
	}
	return out
}

// editCEL gives attestation i of b an edited event log: f edits the records
// of the log prefix the attestation names, the statement is re-signed with
// the env key to name the edited log, and the edited log joins the bundle
// as a carrier line (the good log stays too: one adds it). f returning nil
// makes the statement name a log the bundle does not carry.
func editCEL(t *testing.T, e *env, b [][]byte, i int, f func(recs [][]byte) [][]byte) [][]byte {
	var edited []byte
	b[i] = statement(t, e, b[i], true, func(st map[string]any) {
		logRef(t, st, func(ref scai.LogRef) scai.LogRef {
			recs := f(celRecords(bytes.Clone(e.log[:ref.Size])))
			if recs == nil {
				return scai.RefTo([]byte("a log nobody has"))
			}
			edited = bytes.Join(recs, nil)
			return scai.RefTo(edited)
		})
	})
	if edited != nil {
		b = append(b, scai.Carrier(scai.PayloadTypeCEL, edited))
	}
	return b
}

// logRef edits the event log reference of a statement.
func logRef(t *testing.T, st map[string]any, f func(scai.LogRef) scai.LogRef) {
	t.Helper()
	for _, a := range attrs(st) {
		ev, ok := a.(map[string]any)["evidence"].(map[string]any)
		if !ok || ev["name"] != scai.PartAgentCEL {
			continue
		}
		var ref scai.LogRef
		d, _ := hex.DecodeString(ev["digest"].(map[string]any)["sha256"].(string))
		copy(ref.SHA256[:], d)
		ref.Size, _ = strconv.ParseInt(ev["annotations"].(map[string]any)["size"].(string), 10, 64)
		ref = f(ref)
		ev["digest"] = map[string]any{"sha256": hex.EncodeToString(ref.SHA256[:])}
		ev["annotations"] = map[string]any{"size": strconv.FormatInt(ref.Size, 10)}
		return
	}
	t.Fatal("no event log reference")
}

func flip(off int) func([]byte) []byte {
	return func(d []byte) []byte {
		if off < 0 {
			off += len(d)
		}
		d[off] ^= 0x01
		return d
	}
}

func otherKey() *ecdsa.PrivateKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k
}

// refPolicy is a policy whose reference values match e (or are changed by
// mut), signed by the bake key.
func refPolicy(t *testing.T, e *env, mut func(rv *verify.ReferenceValues)) *verify.Policy {
	t.Helper()
	rv := &verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: e.register, Launch: e.launch}}
	if mut != nil {
		mut(rv)
	}
	p := parsePolicy(t, "version: 1\n")
	st, err := verify.NewReferenceStatement([]verify.ReferenceSubject{{Name: "uki.efi", SHA256: strings.Repeat("cd", 32)}}, rv)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := verify.SignReference(context.Background(), bakeKey, st)
	if err != nil {
		t.Fatal(err)
	}
	p.Reference.File, p.Reference.Keys = "ref.json", []string{"bake.pem"}
	p.Resolved = &verify.Resolved{}
	p.Resolved.Reference, p.Resolved.ReferenceErr = verify.OpenReference(signed, []crypto.PublicKey{bakeKey.Public()})
	return p
}

func parsePolicy(t *testing.T, y string) *verify.Policy {
	t.Helper()
	p, err := verify.ParsePolicy([]byte(y))
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	p.Resolved = &verify.Resolved{}
	return p
}

func withPolicy(e *env, p *verify.Policy) tampered {
	tp := one(e, e.bundle)
	tp.policy = p
	tp.opts = e.opts
	return tp
}

// tpmOnly: reference-values statements hold SHA-256 values of PCR13 only
// (docs/reference-values.md); TEE-only environments use trust.*.
var tpmOnly = []string{"tpm"}

func tamperCases() []tamperCase {
	var cs []tamperCase
	add := func(name string, want func(string) string, backends []string, m func(t *testing.T, f *fixtures, e *env) tampered) {
		cs = append(cs, tamperCase{name: name, want: want, backends: backends, mutate: m})
	}
	each := func(purposeIdx int, resign bool, f func(t *testing.T, e *env, st map[string]any)) func(t *testing.T, _ *fixtures, e *env) tampered {
		return func(t *testing.T, _ *fixtures, e *env) tampered {
			b := cloneBundle(e)
			b[purposeIdx] = statement(t, e, b[purposeIdx], resign, func(st map[string]any) { f(t, e, st) })
			return one(e, b)
		}
	}
	bundleEdit := func(f func(t *testing.T, fx *fixtures, e *env, b [][]byte) [][]byte) func(t *testing.T, fx *fixtures, e *env) tampered {
		return func(t *testing.T, fx *fixtures, e *env) tampered { return one(e, f(t, fx, e, cloneBundle(e))) }
	}

	// Envelopes and signatures.
	for _, x := range []struct {
		name string
		i    int
	}{{"launch", iLaunch}, {"attest", iAttest}, {"dispatch", iDispatch}, {"complete", iComplete}} {
		i := x.i
		add("envelope-signature-flipped/"+x.name, fixed(verify.CheckSignature), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
			b[i] = envelope(t, b[i], func(m map[string]any) {
				sig := m["signatures"].([]any)[0].(map[string]any)
				raw, _ := base64.StdEncoding.DecodeString(sig["sig"].(string))
				raw[len(raw)/2] ^= 1
				sig["sig"] = base64.StdEncoding.EncodeToString(raw)
			})
			return b
		}))
	}
	add("envelope-signed-by-other-key", fixed(verify.CheckSignature), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		payload := payloadOf(t, b[iAttest])
		out, err := scai.SignPayload(context.Background(), otherKey(), payload)
		if err != nil {
			t.Fatal(err)
		}
		b[iAttest] = out
		return b
	}))
	add("envelope-payload-changed-unsigned", fixed(verify.CheckSignature), nil, each(iAttest, false, func(t *testing.T, e *env, st map[string]any) {
		st["predicate"].(map[string]any)["producer"].(map[string]any)["name"] = "not-attestd"
	}))
	add("envelope-payload-type", fixed(verify.CheckEnvelope), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		b[iAttest] = envelope(t, b[iAttest], func(m map[string]any) { m["payloadType"] = "application/json" })
		return b
	}))
	add("envelope-no-signatures", fixed(verify.CheckEnvelope), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		b[iAttest] = envelope(t, b[iAttest], func(m map[string]any) { m["signatures"] = []any{} })
		return b
	}))
	add("envelope-not-json", fixed(verify.CheckEnvelope), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		b[iAttest] = b[iAttest][:len(b[iAttest])/2]
		return b
	}))

	// Statement and predicate.
	add("statement-type", fixed(verify.CheckStatement), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		st["_type"] = "https://in-toto.io/Statement/v0.1"
	}))
	// No longer an attestd attestation: a statement the env key signed
	// about something that is not a build output.
	add("predicate-type-scai-v0.2", fixed(verify.CheckSignedSubject), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		st["predicateType"] = "https://in-toto.io/attestation/scai/attribute-report/v0.2"
	}))
	add("subject-digest", fixed(verify.CheckStatement), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": strings.Repeat("0", 64)}
	}))
	add("subject-added", fixed(verify.CheckStatement), nil, each(iLaunch, true, func(t *testing.T, e *env, st map[string]any) {
		st["subject"] = append(st["subject"].([]any), map[string]any{"name": "x", "digest": map[string]any{"sha256": strings.Repeat("1", 64)}})
	}))
	add("complete-subject-not-output", fixed(verify.CheckStatement), nil, each(iComplete, true, func(t *testing.T, e *env, st map[string]any) {
		st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": strings.Repeat("4", 64)}
	}))
	add("purpose-relabelled", fixed(verify.CheckStatement), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		attrs(st)[0].(map[string]any)["attribute"] = scai.AttrPurposePrefix + "launch"
	}))
	add("binding-condition-changed", fixed(verify.CheckStatement), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		conditions(st)["binding"] = strings.Repeat("0", 64)
	}))
	add("unknown-attribute", fixed(verify.CheckStatement), nil, each(iLaunch, true, func(t *testing.T, e *env, st map[string]any) {
		st["predicate"].(map[string]any)["attributes"] = append(attrs(st), map[string]any{"attribute": "attestd.dev/extra"})
	}))
	add("evidence-removed", fixed(verify.CheckBackend), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		var keep []any
		for _, a := range attrs(st) {
			if !strings.HasPrefix(a.(map[string]any)["attribute"].(string), scai.AttrEvidencePrefix) {
				keep = append(keep, a)
			}
		}
		st["predicate"].(map[string]any)["attributes"] = keep
	}))
	add("evidence-relabelled-unknown-backend", fixed(verify.CheckBackend), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		for _, a := range attrs(st) {
			am := a.(map[string]any)
			if strings.HasPrefix(am["attribute"].(string), scai.AttrEvidencePrefix) {
				am["attribute"] = scai.AttrEvidencePrefix + "fake"
				am["evidence"].(map[string]any)["annotations"] = map[string]any{"backend": "fake"}
			}
		}
	}))
	add("evidence-quote-part-removed", func(b string) string {
		if b == "tdx" {
			return verify.CheckBackend // the quote is TDX evidence's only part
		}
		return quoteCheck[b]
	}, nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, quotePart[e.backend], func([]byte) []byte { return nil })
	}))
	add("evidence-quote-truncated", func(b string) string { return quoteCheck[b] }, nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, quotePart[e.backend], func(d []byte) []byte { return d[:len(d)-40] })
	}))
	add("evidence-quote-signature-byte", func(b string) string { return quoteCheck[b] }, nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		switch e.backend {
		case "tpm":
			part(t, st, tpm.PartQuoteSignature, flip(-3))
		case "snp":
			part(t, st, snp.PartReport, flip(0x2A0+5))
		case "tdx":
			part(t, st, tdx.PartQuote, flip(48+584+4+5))
		}
	}))
	add("evidence-quote-body-byte", func(b string) string { return quoteCheck[b] }, nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, quotePart[e.backend], flip(map[string]int{"tpm": -5, "snp": 0x90, "tdx": 48 + 136}[e.backend]))
	}))
	add("evidence-report-data-byte", func(b string) string { return quoteCheck[b] }, nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, quotePart[e.backend], flip(map[string]int{"tpm": 0x30, "snp": 0x50, "tdx": 48 + 520}[e.backend]))
	}))
	add("evidence-from-another-attestation", func(b string) string { return bindCheck[b] }, nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		// Splice the launch attestation's evidence into the admission.
		var launchEv []any
		statement(t, e, b[iLaunch], false, func(st map[string]any) {
			for _, a := range attrs(st) {
				if strings.HasPrefix(a.(map[string]any)["attribute"].(string), scai.AttrEvidencePrefix) {
					launchEv = append(launchEv, a)
				}
			}
		})
		b[iAttest] = statement(t, e, b[iAttest], true, func(st map[string]any) {
			var out []any
			done := false
			for _, a := range attrs(st) {
				if strings.HasPrefix(a.(map[string]any)["attribute"].(string), scai.AttrEvidencePrefix) {
					if !done {
						out = append(out, launchEv...)
						done = true
					}
					continue
				}
				out = append(out, a)
			}
			st["predicate"].(map[string]any)["attributes"] = out
		})
		return b
	}))
	add("env-key-swapped", func(b string) string { return keyCheck[b] }, nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		k := otherKey()
		b[iAttest] = statementWithKey(t, b[iAttest], k, func(st map[string]any) {
			der, _ := marshalPKIX(k.Public())
			d := sha256.Sum256(der)
			target := attrs(st)[1].(map[string]any)["target"].(map[string]any)
			target["content"] = base64.StdEncoding.EncodeToString(der)
			target["digest"] = map[string]any{"sha256": hex.EncodeToString(d[:])}
			st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": hex.EncodeToString(d[:])}
			rebind(t, st)
		})
		return b
	}))

	// Freshness: nonces.
	add("replay-old-attestation-new-nonce", fixed(verify.CheckNonce), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.Nonces = map[attest.Purpose][]byte{attest.PurposeAttest: []byte("a fresh nonce for this admission")}
		return tp
	})
	add("replay-dispatch-new-nonce", fixed(verify.CheckNonce), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.Nonces = map[attest.Purpose][]byte{attest.PurposeAttest: attestNonce, attest.PurposeDispatch: []byte("new dispatch nonce")}
		return tp
	})
	add("complete-nonce-expected-none-given", fixed(verify.CheckNonce), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.Nonces = map[attest.Purpose][]byte{attest.PurposeComplete: []byte("completion nonce")}
		return tp
	})
	add("nonce-rewritten-and-rebound", func(b string) string { return bindCheck[b] }, nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		conditions(st)["nonce"] = hex.EncodeToString([]byte("a fresh nonce for this admission"))
		rebind(t, st)
	}))
	add("nonce-condition-removed", fixed(verify.CheckStatement), nil, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		delete(conditions(st), "nonce")
	}))
	add("freshness-max-age-exceeded", fixed(verify.CheckPolicyFreshness), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := withPolicy(e, parsePolicy(t, "version: 1\nfreshness: {max_age: 1h}\n"))
		tp.now = time.Now().Add(2 * time.Hour)
		return tp
	})
	add("freshness-issued-in-future", fixed(verify.CheckPolicyFreshness), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := withPolicy(e, parsePolicy(t, "version: 1\nfreshness: {max_age: 1h}\n"))
		tp.now = time.Now().Add(-time.Hour)
		return tp
	})
	add("freshness-issued-at-removed", fixed(verify.CheckPolicyFreshness), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		b := cloneBundle(e)
		for i := iLaunch; i <= iComplete; i++ {
			b[i] = statement(t, e, b[i], true, func(st map[string]any) {
				delete(st["predicate"].(map[string]any)["producer"].(map[string]any)["annotations"].(map[string]any), "issuedAt")
			})
		}
		tp := one(e, b)
		tp.policy = parsePolicy(t, "version: 1\nfreshness: {max_age: 1h}\n")
		return tp
	})

	// Build IDs, requests, outputs.
	add("build-id-rewritten-and-rebound", func(b string) string { return bindCheck[b] }, nil, each(iDispatch, true, func(t *testing.T, e *env, st map[string]any) {
		conditions(st)["buildId"] = "build-evil"
		rebind(t, st)
	}))
	add("build-id-rewritten", fixed(verify.CheckStatement), nil, each(iDispatch, true, func(t *testing.T, e *env, st map[string]any) {
		conditions(st)["buildId"] = "build-evil"
	}))
	add("build-id-unexpected", fixed(verify.CheckChainBuildID), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.BuildID = "build-expected-by-the-control-plane"
		return tp
	})
	add("policy-build-id-no-dispatch", fixed(verify.CheckPolicyBuild), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle[:2])
		tp.policy = parsePolicy(t, "version: 1\nbuild: {id: "+e.buildID+"}\n")
		tp.opts = e.opts
		return tp
	})
	add("policy-build-request-mismatch", fixed(verify.CheckPolicyRequest), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nbuild:\n  request:\n    - {name: source, digest: {gitCommit: '"+strings.Repeat("9", 40)+"'}}\n"))
	})
	add("request-rewritten-and-rebound", fixed(verify.CheckBuildEvents), nil, each(iDispatch, true, func(t *testing.T, e *env, st map[string]any) {
		for _, a := range attrs(st) {
			if am := a.(map[string]any); am["attribute"] == scai.AttrBuildRequest {
				am["target"].(map[string]any)["uri"] = "git+https://evil.example/app"
			}
		}
		a := openLoose(t, st)
		d, _ := scai.RequestDigest(a.Build.Request)
		conditions(st)["requestDigest"] = hex.EncodeToString(d[:])
		rebind(t, st)
	}))
	add("output-rewritten-and-rebound", fixed(verify.CheckBuildEvents), nil, each(iComplete, true, func(t *testing.T, e *env, st map[string]any) {
		evil := map[string]any{"sha256": strings.Repeat("6", 64)}
		for _, a := range attrs(st) {
			if am := a.(map[string]any); am["attribute"] == scai.AttrBuildOutput {
				am["target"].(map[string]any)["digest"] = evil
			}
		}
		st["subject"].([]any)[0].(map[string]any)["digest"] = evil
		a := openLoose(t, st)
		d, _ := scai.IODigest(a.Build.Inputs, a.Build.Outputs)
		conditions(st)["ioDigest"] = hex.EncodeToString(d[:])
		rebind(t, st)
	}))
	add("provenance-subject-not-an-output", fixed(verify.CheckSignedSubject), nil, each(iSigned, true, func(t *testing.T, e *env, st map[string]any) {
		st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": strings.Repeat("7", 64)}
	}))
	add("provenance-signature-flipped", fixed(verify.CheckSignature), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		b[iSigned] = envelope(t, b[iSigned], func(m map[string]any) {
			sig := m["signatures"].([]any)[0].(map[string]any)
			raw, _ := base64.StdEncoding.DecodeString(sig["sig"].(string))
			raw[8] ^= 1
			sig["sig"] = base64.StdEncoding.EncodeToString(raw)
		})
		return b
	}))
	add("provenance-payload-type", fixed(verify.CheckEnvelope), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		b[iSigned] = envelope(t, b[iSigned], func(m map[string]any) { m["payloadType"] = "text/plain" })
		return b
	}))

	// The agent's event log.
	add("cel-event-changed", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return one(e, editCEL(t, e, cloneBundle(e), iAttest, func(r [][]byte) [][]byte { r[0][len(r[0])-3] ^= 1; return r }))
	})
	add("cel-event-dropped", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return one(e, editCEL(t, e, cloneBundle(e), iAttest, func(r [][]byte) [][]byte { return append(r[:1], r[2:]...) }))
	})
	add("cel-events-reordered", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return one(e, editCEL(t, e, cloneBundle(e), iAttest, func(r [][]byte) [][]byte { r[0], r[1] = r[1], r[0]; return r }))
	})
	add("cel-event-appended", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return one(e, editCEL(t, e, cloneBundle(e), iAttest, func(r [][]byte) [][]byte { return append(r, r[len(r)-1]) }))
	})
	add("cel-truncated", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return one(e, editCEL(t, e, cloneBundle(e), iAttest, func(r [][]byte) [][]byte { last := r[len(r)-1]; r[len(r)-1] = last[:len(last)-2]; return r }))
	})
	add("cel-removed", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return one(e, editCEL(t, e, cloneBundle(e), iAttest, func([][]byte) [][]byte { return nil }))
	})
	add("cel-separator-dropped", fixed(verify.CheckLaunch), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		// The launch attestation's log without its last (separator) record
		// is a valid log of an unfinished launch: the replay fails, and
		// the launch is not frozen.
		return one(e, editCEL(t, e, cloneBundle(e), iLaunch, func(r [][]byte) [][]byte { return r[:len(r)-1] }))
	})
	add("cel-dispatch-log-from-launch", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		b := cloneBundle(e)
		var launchCEL []byte
		statement(t, e, b[iLaunch], false, func(st map[string]any) {
			logRef(t, st, func(ref scai.LogRef) scai.LogRef { launchCEL = e.log[:ref.Size]; return ref })
		})
		return one(e, editCEL(t, e, b, iDispatch, func([][]byte) [][]byte { return celRecords(launchCEL) }))
	})

	// The bundle as a chain; replays across environments.
	add("chain-launch-dropped", fixed(verify.CheckChainMembers), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		return b[1:]
	}))
	add("chain-dispatch-duplicated", fixed(verify.CheckChainMembers), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		return append(b, b[iDispatch])
	}))
	add("chain-dispatch-dropped", fixed(verify.CheckChainMembers), nil, bundleEdit(func(t *testing.T, _ *fixtures, e *env, b [][]byte) [][]byte {
		return append(b[:iDispatch], b[iComplete:]...)
	}))
	add("replay-dispatch-from-another-environment", fixed(verify.CheckChainEnvKey), nil, func(t *testing.T, fx *fixtures, e *env) tampered {
		b := cloneBundle(e)
		b[iDispatch] = fx.other(e).bundle[iDispatch]
		return one(e, b)
	})
	add("replay-completion-from-another-environment", fixed(verify.CheckChainEnvKey), nil, func(t *testing.T, fx *fixtures, e *env) tampered {
		b := cloneBundle(e)
		b[iComplete] = fx.other(e).bundle[iComplete]
		return one(e, b)
	})
	add("replay-two-builds-one-env-key", fixed(verify.CheckOneBuildPerEnv), []string{"tpm"}, func(t *testing.T, fx *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.inputs = append(tp.inputs, verify.Input{Name: "second", Raw: fx.tpmSameKey.raw()})
		tp.opts.BuildID = ""
		tp.policy = parsePolicy(t, "version: 1\n")
		return tp
	})

	// Trust anchors and backend policy.
	add("tpm-ak-not-pinned", fixed(tpm.CheckAKTrusted), []string{"tpm"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.TrustedAKs = nil
		return tp
	})
	add("tpm-ak-pinned-other", fixed(tpm.CheckAKTrusted), []string{"tpm"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.TrustedAKs = []crypto.PublicKey{otherKey().Public()}
		return tp
	})
	add("tpm-pcr-value-changed", fixed(tpm.CheckPCRDigest), []string{"tpm"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, tpm.PartPCRs, func(d []byte) []byte {
			return bytes.Replace(d, []byte(`"0":"`), []byte(`"0":"f`), 1)[:len(d)]
		})
	}))
	add("tpm-pcr-entry-removed", fixed(tpm.CheckPCRDigest), []string{"tpm"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, tpm.PartPCRs, func(d []byte) []byte {
			var v tpm.PCRValues
			json.Unmarshal(d, &v)
			delete(v.PCRs, "7")
			out, _ := json.Marshal(v)
			return out
		})
	}))
	add("tpm-certify-info-byte", fixed(tpm.CheckEnvKeyCertified), []string{"tpm"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, tpm.PartCertifyInfo, flip(-4))
	}))
	add("tpm-certify-signature-byte", fixed(tpm.CheckEnvKeyCertified), []string{"tpm"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, tpm.PartCertifySignature, flip(-4))
	}))
	add("tpm-env-key-public-from-another-env", fixed(tpm.CheckEnvKeyCertified), []string{"tpm"}, func(t *testing.T, fx *fixtures, e *env) tampered {
		var other []byte
		statement(t, e, fx.tpmOther.bundle[iAttest], false, func(st map[string]any) {
			part(t, st, tpm.PartEnvKeyPublic, func(d []byte) []byte { other = d; return d })
		})
		b := cloneBundle(e)
		b[iAttest] = statement(t, e, b[iAttest], true, func(st map[string]any) { part(t, st, tpm.PartEnvKeyPublic, func([]byte) []byte { return other }) })
		return one(e, b)
	})
	add("tpm-ak-public-replaced", fixed(tpm.CheckAKTrusted), []string{"tpm"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		var envPub []byte
		part(t, st, tpm.PartEnvKeyPublic, func(d []byte) []byte { envPub = d; return d })
		part(t, st, tpm.PartAKPublic, func([]byte) []byte { return envPub })
	}))
	add("tpm-required-register-not-quoted", fixed(verify.CheckPolicyRegisters), []string{"tpm"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nrequire: {registers: [PCR0, PCR13, PCR22]}\n"))
	})
	add("tpm-register-value-not-accepted", fixed(verify.CheckPolicyRegisterValues), []string{"tpm"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nreference:\n  registers:\n    PCR13: ['"+strings.Repeat("00", 32)+"']\n"))
	})
	add("snp-real-amd-roots", fixed(snp.CheckReportSignature), []string{"snp"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.Verifiers = []attest.Verifier{snp.Verifier{Now: func() time.Time { return teeNow }}}
		return tp
	})
	add("snp-vcek-removed", fixed(snp.CheckReportSignature), []string{"snp"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, snp.PartVCEK, func([]byte) []byte { return nil })
	}))
	add("snp-vcek-byte", fixed(snp.CheckReportSignature), []string{"snp"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, snp.PartVCEK, flip(-20))
	}))
	add("snp-certificate-expired", fixed(snp.CheckReportSignature), []string{"snp"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		v := e.verifier.(snp.Verifier)
		v.Now = func() time.Time { return teeCreated.AddDate(30, 0, 0) }
		tp.opts.Verifiers = []attest.Verifier{v}
		return tp
	})
	add("snp-software-register-changed", fixed(snp.CheckEnvKey), []string{"snp"}, each(iAttest, true, func(t *testing.T, e *env, st map[string]any) {
		part(t, st, snp.PartRegister, flip(0))
	}))
	add("snp-measurement-not-accepted", fixed(snp.CheckPolicy), []string{"snp"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		v := e.verifier.(snp.Verifier)
		v.Policy.Measurements = [][48]byte{{1}}
		tp.opts.Verifiers = []attest.Verifier{v}
		return tp
	})
	add("snp-tcb-below-minimum", fixed(snp.CheckPolicy), []string{"snp"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		v := e.verifier.(snp.Verifier)
		v.Policy.MinimumTCB.SnpSpl = 255
		tp.opts.Verifiers = []attest.Verifier{v}
		return tp
	})
	add("tdx-real-intel-root", fixed(tdx.CheckQuoteSignature), []string{"tdx"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.Verifiers = []attest.Verifier{tdx.Verifier{InsecureSkipCollateral: true, Now: func() time.Time { return teeNow }}}
		return tp
	})
	add("tdx-other-fake-root", fixed(tdx.CheckQuoteSignature), []string{"tdx"}, func(t *testing.T, fx *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		tp.opts.Verifiers = []attest.Verifier{fx.tdxOther.verifier}
		return tp
	})
	add("tdx-collateral-missing", fixed(tdx.CheckCollateral), []string{"tdx"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		v := e.verifier.(tdx.Verifier)
		v.InsecureSkipCollateral = false
		tp.opts.Verifiers = []attest.Verifier{v}
		return tp
	})
	add("tdx-mrtd-not-accepted", fixed(tdx.CheckPolicy), []string{"tdx"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		v := e.verifier.(tdx.Verifier)
		v.Policy.MRTDs = [][48]byte{{1}}
		tp.opts.Verifiers = []attest.Verifier{v}
		return tp
	})
	add("tdx-rtmrs-not-accepted", fixed(tdx.CheckPolicy), []string{"tdx"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle)
		v := e.verifier.(tdx.Verifier)
		v.Policy.RTMRs = &[3][48]byte{}
		tp.opts.Verifiers = []attest.Verifier{v}
		return tp
	})

	// Reference values and policy requirements.
	add("reference-launch-value-differs", fixed(verify.CheckRefAgentRegister), tpmOnly, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, refPolicy(t, e, func(rv *verify.ReferenceValues) { rv.Agent.Launch = strings.Repeat("ab", 32) }))
	})
	add("reference-signed-by-other-key", fixed(verify.CheckReference), tpmOnly, func(t *testing.T, _ *fixtures, e *env) tampered {
		p := refPolicy(t, e, nil)
		st, _ := verify.NewReferenceStatement(nil, &verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: "PCR13", Launch: strings.Repeat("ab", 32)}})
		signed, _ := verify.SignReference(context.Background(), otherKey(), st)
		p.Resolved.Reference, p.Resolved.ReferenceErr = verify.OpenReference(signed, []crypto.PublicKey{bakeKey.Public()})
		return withPolicy(e, p)
	})
	add("reference-payload-tampered", fixed(verify.CheckReference), tpmOnly, func(t *testing.T, _ *fixtures, e *env) tampered {
		p := refPolicy(t, e, nil)
		st, _ := verify.NewReferenceStatement(nil, &verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: e.register, Launch: e.launch}})
		signed, _ := verify.SignReference(context.Background(), bakeKey, st)
		signed = envelope(t, signed, func(m map[string]any) {
			payload, _ := base64.StdEncoding.DecodeString(m["payload"].(string))
			m["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte(e.launch), []byte(strings.Repeat("cd", len(e.launch)/2)), 1))
		})
		p.Resolved.Reference, p.Resolved.ReferenceErr = verify.OpenReference(signed, []crypto.PublicKey{bakeKey.Public()})
		return withPolicy(e, p)
	})
	add("reference-roothash-differs", fixed(verify.CheckRefRootHash), tpmOnly, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, refPolicy(t, e, func(rv *verify.ReferenceValues) { rv.RootHash = strings.Repeat("cd", 32) }))
	})

	// The launch's storage measurement (storage: in the policy).
	storagePolicy := "version: 1\nstorage: {root_verity: '" + fixtureRootHash + "', encrypted_writable: true}\n"
	add("storage-not-measured/encrypted", fixed(verify.CheckPolicyStorageEncrypted), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nstorage: {encrypted_writable: true}\n"))
	})
	add("storage-not-measured/root-verity", fixed(verify.CheckPolicyStorageRootVerity), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nstorage: {root_verity: '"+fixtureRootHash+"'}\n"))
	})
	// A good storage event slipped into a launch that measured none: the
	// log no longer replays, so it is not read.
	add("storage-good-event-inserted", fixed(verify.CheckReplay), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		b := editCEL(t, e, cloneBundle(e), iLaunch, func(r [][]byte) [][]byte { return forgeCEL(t, r, measure.EventImage, goodStorageEvent(t)) })
		tp := one(e, b)
		tp.policy = parsePolicy(t, storagePolicy)
		return tp
	})
	add("storage-work-dir-unencrypted", fixed(verify.CheckPolicyStorageEncrypted), tpmOnly, func(t *testing.T, fx *fixtures, _ *env) tampered {
		return withPolicy(fx.storage["plain-work-dir"], parsePolicy(t, storagePolicy))
	})
	add("storage-root-hash-not-the-policy's", fixed(verify.CheckPolicyStorageRootVerity), tpmOnly, func(t *testing.T, fx *fixtures, _ *env) tampered {
		return withPolicy(fx.storage["good"], parsePolicy(t, "version: 1\nstorage: {root_verity: '"+otherRootHash+"'}\n"))
	})

	add("require-level-3-without-tee", fixed(verify.CheckPolicyLevel), []string{"tpm"}, func(t *testing.T, _ *fixtures, e *env) tampered {
		p := refPolicy(t, e, nil)
		p.Require.Level = 3
		return withPolicy(e, p)
	})
	add("require-level-1-without-reference", fixed(verify.CheckPolicyLevel), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nrequire: {level: 1}\n"))
	})
	add("require-backend-absent", fixed(verify.CheckPolicyBackends), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		other := map[string]string{"tpm": "snp", "snp": "tdx", "tdx": "tpm"}[e.backend]
		return withPolicy(e, parsePolicy(t, "version: 1\nrequire: {backends: ["+other+"]}\n"))
	})
	add("require-attribute-absent", fixed(verify.CheckPolicyAttributes), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		return withPolicy(e, parsePolicy(t, "version: 1\nrequire: {attributes: ['dispatch:attestd.dev/build/output']}\n"))
	})
	add("require-purpose-absent", fixed(verify.CheckPolicyPurposes), nil, func(t *testing.T, _ *fixtures, e *env) tampered {
		tp := one(e, e.bundle[:iDispatch])
		tp.policy = parsePolicy(t, "version: 1\nrequire: {purposes: [launch, dispatch, complete]}\n")
		tp.opts.BuildID = ""
		return tp
	})
	return cs
}

// other returns the other environment of e's backend.
func (f *fixtures) other(e *env) *env {
	switch e {
	case f.tpm:
		return f.tpmOther
	case f.snp:
		return f.snpOther
	default:
		return f.tdxOther
	}
}

func payloadOf(t *testing.T, raw []byte) []byte {
	t.Helper()
	var m map[string]any
	json.Unmarshal(raw, &m)
	p, err := base64.StdEncoding.DecodeString(m["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// statementWithKey edits the payload and signs it with key.
func statementWithKey(t *testing.T, raw []byte, key *ecdsa.PrivateKey, f func(st map[string]any)) []byte {
	t.Helper()
	var st map[string]any
	if err := json.Unmarshal(payloadOf(t, raw), &st); err != nil {
		t.Fatal(err)
	}
	f(st)
	payload, _ := json.Marshal(st)
	out, err := scai.SignPayload(context.Background(), key, payload)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func failedChecks(ev *verify.Evaluation) []string {
	var out []string
	for _, b := range ev.Bundles {
		out = append(out, b.Failed()...)
	}
	for _, c := range ev.Checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// TestTamperCorpus runs every case against every backend it applies to.
func TestTamperCorpus(t *testing.T) {
	f := getFixtures(t)
	n := 0
	for _, tc := range tamperCases() {
		for _, e := range []*env{f.tpm, f.snp, f.tdx} {
			if tc.backends != nil && !slices.Contains(tc.backends, e.backend) {
				continue
			}
			n++
			t.Run(e.backend+"/"+tc.name, func(t *testing.T) {
				tp := tc.mutate(t, f, e)
				ev := evaluate(tp.policy, tp.inputs, tp.opts, tp.now)
				want := tc.want(e.backend)
				failed := failedChecks(ev)
				if ev.OK {
					t.Fatalf("accepted; want %s to fail", want)
				}
				if !slices.Contains(failed, want) {
					for _, b := range ev.Bundles {
						logReport(t, b.Report)
						for _, c := range b.Policy {
							t.Logf("  policy %s ok=%v: %s", c.Name, c.OK, c.Detail)
						}
					}
					t.Fatalf("rejected by %v, want %s among them", failed, want)
				}
			})
		}
	}
	if n < 60 {
		t.Errorf("%d cases, want at least 60", n)
	}
	t.Logf("%d tamper cases", n)
}

// TestGoodBundlesUnderPolicy: the same fixtures pass a demanding policy
// (the tamper cases are not failing for an unrelated reason).
func TestGoodBundlesUnderPolicy(t *testing.T) {
	f := getFixtures(t)
	for _, e := range []*env{f.tpm, f.snp, f.tdx} {
		trust := ""
		switch e.backend {
		case "snp":
			trust = "trust: {snp: {measurements: ['" + hex.EncodeToString(snpMeasurement(t, e)) + "']}}\n"
		case "tdx":
			trust = "trust: {tdx: {mrtds: ['" + hex.EncodeToString(tdxMRTD(t, e)) + "']}}\n"
		}
		p2 := parsePolicy(t, fmt.Sprintf(`version: 1
require:
  level: 1
  backends: [%s]
  purposes: [launch, attest, dispatch, complete]
  attributes: [attestd.dev/env-key, 'complete:attestd.dev/build/output']
freshness: {max_age: 1h}
build:
  id: %s
  request: [{name: source, uri: 'git+https://example.com/app'}]
`, e.backend, e.buildID)+trust)
		if e.backend == "tpm" {
			p := refPolicy(t, e, nil)
			p2.Resolved, p2.Reference = p.Resolved, p.Reference
		}
		tp := withPolicy(e, p2)
		ev := evaluate(tp.policy, tp.inputs, tp.opts, time.Time{})
		if !ev.OK {
			for _, b := range ev.Bundles {
				logReport(t, b.Report)
				for _, c := range b.Policy {
					t.Logf("  policy %s ok=%v: %s", c.Name, c.OK, c.Detail)
				}
			}
			t.Fatalf("%s: good bundle refused: %v", e.backend, failedChecks(ev))
		}
		want := map[string]int{"tpm": 2, "snp": 3, "tdx": 2}[e.backend] // tdx: collateral skipped (no Intel collateral for fakes) caps at 2
		if ev.Bundles[0].Level != want {
			t.Errorf("%s: level %d, want %d", e.backend, ev.Bundles[0].Level, want)
		}
	}
}

func parsePKIX(der []byte) (crypto.PublicKey, error) { return x509.ParsePKIXPublicKey(der) }

func marshalPKIX(k crypto.PublicKey) ([]byte, error) { return x509.MarshalPKIXPublicKey(k) }

func descriptor(t *testing.T, b []byte) *ita.ResourceDescriptor {
	t.Helper()
	rd := &ita.ResourceDescriptor{}
	if err := protojson.Unmarshal(b, rd); err != nil {
		t.Fatal(err)
	}
	return rd
}

func evidencePart(t *testing.T, e *env, name string) []byte {
	t.Helper()
	var out []byte
	statement(t, e, e.bundle[iLaunch], false, func(st map[string]any) {
		part(t, st, name, func(d []byte) []byte { out = d; return d })
	})
	return out
}

func snpMeasurement(t *testing.T, e *env) []byte {
	r, err := snp.ParseReport(evidencePart(t, e, snp.PartReport))
	if err != nil {
		t.Fatal(err)
	}
	return r.GetMeasurement()
}

func tdxMRTD(t *testing.T, e *env) []byte {
	q, err := tdx.ParseQuote(evidencePart(t, e, tdx.PartQuote))
	if err != nil {
		t.Fatal(err)
	}
	return q.GetTdQuoteBody().GetMrTd()
}
