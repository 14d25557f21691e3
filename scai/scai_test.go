package scai_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/google/go-cmp/cmp"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/testing/protocmp"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func TestRoundTrip(t *testing.T) {
	ec := seededKey(t, "round trip")
	rk := rsaKey(t)
	tests := []struct {
		name    string
		signer  crypto.Signer
		purpose attest.Purpose
		mutate  func(a *scai.Attestation)
	}{
		{name: "launch", signer: ec, purpose: attest.PurposeLaunch},
		{name: "attest", signer: ec, purpose: attest.PurposeAttest},
		{name: "dispatch", signer: ec, purpose: attest.PurposeDispatch},
		{name: "complete", signer: ec, purpose: attest.PurposeComplete},
		{name: "rsa", signer: rk, purpose: attest.PurposeAttest},
		{name: "minimal", signer: ec, purpose: attest.PurposeLaunch, mutate: func(a *scai.Attestation) {
			a.Evidence = nil
			a.Producer = scai.Producer{Name: "attestd"}
			a.Time = time.Time{}
		}},
		{name: "two backends and empty part", signer: ec, purpose: attest.PurposeLaunch, mutate: func(a *scai.Attestation) {
			a.Evidence = append(a.Evidence, &attest.Evidence{Backend: "snp", Parts: []attest.Part{
				{Name: "snp/report", MediaType: "application/octet-stream", Data: bytes.Repeat([]byte{7}, 1184)},
				{Name: "snp/empty"},
			}})
			a.Time = a.Time.Add(123 * time.Nanosecond).In(time.FixedZone("CET", 3600))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttestation(t, tc.purpose, tc.signer.Public())
			if tc.mutate != nil {
				tc.mutate(a)
			}
			b := signed(t, tc.signer, a)
			o, env, err := openVerified(b)
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			if d := cmp.Diff(a, o.Attestation, cmpAttestation); d != "" {
				t.Errorf("attestation changed in round trip (-want +got):\n%s", d)
			}
			want, err := env.DecodeB64Payload()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Payload, want) {
				t.Error("Opened.Payload is not the signed payload")
			}
			// The statement Open returns is the one NewStatement builds.
			st, err := scai.NewStatement(o.Attestation)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(st, o.Statement(), protocmp.Transform()); d != "" {
				t.Errorf("statement differs (-rebuilt +opened):\n%s", d)
			}
			kid, err := scai.KeyID(tc.signer.Public())
			if err != nil {
				t.Fatal(err)
			}
			if len(env.Signatures) != 1 || env.Signatures[0].KeyID != kid {
				t.Errorf("signatures = %+v, want one with keyid %s", env.Signatures, kid)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	k := seededKey(t, "attestd golden key")
	st, err := scai.NewStatement(newAttestation(t, attest.PurposeAttest, k.Public()))
	if err != nil {
		t.Fatal(err)
	}
	b, err := protojson.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	got := canonicalJSON(t, b)
	path := filepath.Join("testdata", "attest-statement.golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if d := cmp.Diff(string(canonicalJSON(t, want)), string(got)); d != "" {
		t.Errorf("statement differs from %s (-want +got):\n%s", path, d)
	}
	// The golden statement is itself a valid statement.
	var gst ita.Statement
	if err := protojson.Unmarshal(want, &gst); err != nil {
		t.Fatal(err)
	}
	if err := gst.Validate(); err != nil {
		t.Fatal(err)
	}
}

// canonicalJSON re-marshals b with sorted keys and fixed indentation, for
// comparison only (protojson output is deliberately unstable).
func canonicalJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

func TestTamper(t *testing.T) {
	k := seededKey(t, "tamper")
	other := seededKey(t, "someone else")
	good := signed(t, k, newAttestation(t, attest.PurposeAttest, k.Public()))
	env, err := scai.ParseEnvelope(good)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		t.Fatal(err)
	}

	// resign applies edit to the decoded statement JSON and signs the result
	// with signer, as an attacker holding that key could.
	resign := func(signer crypto.Signer, edit func(m map[string]any)) *dsse.Envelope {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		p, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		es, err := dsse.NewEnvelopeSigner(rawSigner{signer})
		if err != nil {
			t.Fatal(err)
		}
		e, err := es.SignPayload(context.Background(), scai.PayloadType, p)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	attrs := func(m map[string]any) []any { return m["predicate"].(map[string]any)["attributes"].([]any) }
	envKeyTarget := func(m map[string]any) map[string]any { return attrs(m)[1].(map[string]any)["target"].(map[string]any) }
	otherDER, otherKD := keyDER(t, other.Public())

	tests := []struct {
		name string
		env  func() *dsse.Envelope
		key  crypto.PublicKey // for VerifySignature; nil: the env key
		want error            // from Open or VerifySignature, whichever fails first
	}{
		{name: "payload byte", want: scai.ErrSignature, env: func() *dsse.Envelope {
			p := bytes.Clone(payload)
			i := bytes.Index(p, []byte("v0.1.0-test"))
			p[i] = 'V' // the producer version: still a valid statement
			return &dsse.Envelope{PayloadType: env.PayloadType, Payload: base64.StdEncoding.EncodeToString(p), Signatures: env.Signatures}
		}},
		{name: "payload type", want: scai.ErrPayloadType, env: func() *dsse.Envelope {
			return &dsse.Envelope{PayloadType: "application/json", Payload: env.Payload, Signatures: env.Signatures}
		}},
		{name: "signature", want: scai.ErrSignature, env: func() *dsse.Envelope {
			sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
			sig[len(sig)-1] ^= 1
			return &dsse.Envelope{PayloadType: env.PayloadType, Payload: env.Payload,
				Signatures: []dsse.Signature{{KeyID: env.Signatures[0].KeyID, Sig: base64.StdEncoding.EncodeToString(sig)}}}
		}},
		{name: "verify with another key", key: other.Public(), want: scai.ErrSignature, env: func() *dsse.Envelope { return env }},
		{name: "subject digest", want: scai.ErrSubject, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				m["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": otherKD}
			})
		}},
		{name: "predicate type", want: scai.ErrPredicateType, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) { m["predicateType"] = "https://in-toto.io/attestation/scai/v0.2" })
		}},
		{name: "env key swapped", want: scai.ErrSubject, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				tg := envKeyTarget(m)
				tg["content"] = base64.StdEncoding.EncodeToString(otherDER)
				tg["digest"] = map[string]any{"sha256": otherKD}
			})
		}},
		{name: "env key content only", want: scai.ErrEnvKey, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				envKeyTarget(m)["content"] = base64.StdEncoding.EncodeToString(otherDER)
			})
		}},
		{name: "env key swapped and re-signed by the new key", want: scai.ErrSubject, env: func() *dsse.Envelope {
			return resign(other, func(m map[string]any) {
				tg := envKeyTarget(m)
				tg["content"] = base64.StdEncoding.EncodeToString(otherDER)
				tg["digest"] = map[string]any{"sha256": otherKD}
			})
		}},
		{name: "nonce changed", want: scai.ErrBinding, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				attrs(m)[0].(map[string]any)["conditions"].(map[string]any)["nonce"] = "00"
			})
		}},
		{name: "evidence content", want: scai.ErrStatement, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				attrs(m)[2].(map[string]any)["evidence"].(map[string]any)["content"] = "AAAA"
			})
		}},
		{name: "unknown field", want: scai.ErrStatement, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) { m["extra"] = 1 })
		}},
		{name: "unknown attribute", want: scai.ErrStatement, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				m["predicate"].(map[string]any)["attributes"] = append(attrs(m), map[string]any{"attribute": "IS_TRUSTED"})
			})
		}},
		{name: "attributes reordered", want: scai.ErrStatement, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				a := attrs(m)
				a[2], a[3] = a[3], a[2]
				a[2], a[len(a)-1] = a[len(a)-1], a[2]
			})
		}},
		{name: "purpose mismatch", want: scai.ErrStatement, env: func() *dsse.Envelope {
			return resign(k, func(m map[string]any) {
				attrs(m)[0].(map[string]any)["attribute"] = "attestd.dev/purpose/launch"
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.env()
			err := func() error {
				o, err := scai.Open(e)
				if err != nil {
					return err
				}
				key := tc.key
				if key == nil {
					key = o.Attestation.EnvKey
				}
				return scai.VerifySignature(e, key)
			}()
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func keyDER(t *testing.T, pub crypto.PublicKey) ([]byte, string) {
	t.Helper()
	st, err := scai.NewStatement(newAttestation(t, attest.PurposeLaunch, pub))
	if err != nil {
		t.Fatal(err)
	}
	kid, err := scai.KeyID(pub)
	if err != nil {
		t.Fatal(err)
	}
	c := st.GetPredicate().GetFields()["attributes"].GetListValue().GetValues()[1].GetStructValue().GetFields()["target"].GetStructValue().GetFields()["content"].GetStringValue()
	der, err := base64.StdEncoding.DecodeString(c)
	if err != nil {
		t.Fatal(err)
	}
	return der, kid
}

// rawSigner signs PAE with SHA-256 for tests that build envelopes by hand.
type rawSigner struct{ s crypto.Signer }

func (r rawSigner) Sign(_ context.Context, data []byte) ([]byte, error) {
	d := sha256.Sum256(data)
	return r.s.Sign(rand.Reader, d[:], crypto.SHA256)
}
func (r rawSigner) KeyID() (string, error) { return scai.KeyID(r.s.Public()) }

func TestNewStatementErrors(t *testing.T) {
	k := seededKey(t, "errors")
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func(a *scai.Attestation)
		want   error
	}{
		{"unknown purpose", func(a *scai.Attestation) { a.Purpose = "boot" }, nil},
		{"nonce on launch", func(a *scai.Attestation) { a.Purpose = attest.PurposeLaunch }, nil},
		{"empty nonce", func(a *scai.Attestation) { a.Nonce = nil }, attest.ErrNonceSize},
		{"long nonce", func(a *scai.Attestation) { a.Nonce = make([]byte, 65) }, attest.ErrNonceSize},
		{"binding", func(a *scai.Attestation) { a.Binding[0] ^= 1 }, scai.ErrBinding},
		{"launch binding", func(a *scai.Attestation) {
			a.Purpose, a.Nonce = attest.PurposeLaunch, nil
			a.Binding[0] ^= 1
		}, scai.ErrBinding},
		{"no key", func(a *scai.Attestation) { a.EnvKey = nil }, scai.ErrEnvKey},
		{"P-384 key", func(a *scai.Attestation) { a.EnvKey = p384.Public() }, scai.ErrEnvKey},
		{"duplicate backend", func(a *scai.Attestation) { a.Evidence = append(a.Evidence, a.Evidence[0]) }, nil},
		{"nil evidence", func(a *scai.Attestation) { a.Evidence = append(a.Evidence, nil) }, nil},
		{"bad backend", func(a *scai.Attestation) { a.Evidence[0].Backend = "TPM 2" }, nil},
		{"no parts", func(a *scai.Attestation) { a.Evidence[0].Parts = nil }, nil},
		{"duplicate part", func(a *scai.Attestation) { a.Evidence[0].Parts = append(a.Evidence[0].Parts, a.Evidence[0].Parts[0]) }, nil},
		{"no event log", func(a *scai.Attestation) { a.Log = scai.LogRef{} }, nil},
		{"batch with a nonce", func(a *scai.Attestation) { a.Batch = &scai.Batch{Size: 2} }, nil},
		{"batch of one", func(a *scai.Attestation) { a.Nonce, a.Batch = nil, &scai.Batch{Size: 1} }, nil},
		{"unnamed part", func(a *scai.Attestation) { a.Evidence[0].Parts[0].Name = "" }, nil},
		{"bad UTF-8", func(a *scai.Attestation) { a.Evidence[0].Parts[0].MediaType = "\xff" }, nil},
		{"no producer", func(a *scai.Attestation) { a.Producer.Name = "" }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newAttestation(t, attest.PurposeAttest, k.Public())
			tc.mutate(a)
			st, err := scai.NewStatement(a)
			if err == nil {
				t.Fatalf("NewStatement succeeded: %v", st)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// badSigner returns signatures in the wrong encoding, as a misconfigured
// TPM signer might.
type badSigner struct{ *ecdsa.PrivateKey }

func (b badSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return make([]byte, 64), nil
}

func TestSignErrors(t *testing.T) {
	k := seededKey(t, "sign errors")
	st, err := scai.NewStatement(newAttestation(t, attest.PurposeLaunch, k.Public()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := scai.Sign(context.Background(), badSigner{k}, st); !errors.Is(err, scai.ErrSignature) {
		t.Errorf("bad signer: got %v, want ErrSignature", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := scai.Sign(ctx, k, st); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
	if _, err := scai.Sign(context.Background(), k, &ita.Statement{}); err == nil {
		t.Error("invalid statement signed")
	}
}

func TestParseEnvelope(t *testing.T) {
	k := seededKey(t, "parse")
	good := signed(t, k, newAttestation(t, attest.PurposeLaunch, k.Public()))
	var m map[string]any
	if err := json.Unmarshal(good, &m); err != nil {
		t.Fatal(err)
	}
	with := func(edit func(m map[string]any)) []byte {
		c := map[string]any{}
		for k, v := range m {
			c[k] = v
		}
		edit(c)
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sigs := m["signatures"]
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"good", good, nil},
		{"indented", indent(t, good), nil},
		{"empty", nil, scai.ErrEnvelope},
		{"not JSON", []byte("hello"), scai.ErrEnvelope},
		{"array", []byte("[]"), scai.ErrEnvelope},
		{"trailing", append(bytes.Clone(good), "{}"...), scai.ErrEnvelope},
		{"truncated", good[:len(good)-1], scai.ErrEnvelope},
		{"too large", append(bytes.Clone(good), bytes.Repeat([]byte(" "), scai.MaxEnvelopeSize)...), scai.ErrEnvelope},
		{"payload type", with(func(m map[string]any) { m["payloadType"] = "text/plain" }), scai.ErrPayloadType},
		{"no payload type", with(func(m map[string]any) { delete(m, "payloadType") }), scai.ErrEnvelope},
		{"no payload", with(func(m map[string]any) { delete(m, "payload") }), scai.ErrEnvelope},
		{"payload not base64", with(func(m map[string]any) { m["payload"] = "not base64!" }), scai.ErrEnvelope},
		{"payload null", with(func(m map[string]any) { m["payload"] = nil }), scai.ErrEnvelope},
		{"no signatures", with(func(m map[string]any) { m["signatures"] = []any{} }), scai.ErrEnvelope},
		{"signatures null", with(func(m map[string]any) { m["signatures"] = nil }), scai.ErrEnvelope},
		{"sig missing", with(func(m map[string]any) { m["signatures"] = []any{map[string]any{"keyid": "x"}} }), scai.ErrEnvelope},
		{"sig not base64", with(func(m map[string]any) { m["signatures"] = []any{map[string]any{"sig": "%%"}} }), scai.ErrEnvelope},
		{"signature unknown field", with(func(m map[string]any) {
			m["signatures"] = []any{map[string]any{"sig": "AAAA", "cert": "x"}}
		}), scai.ErrEnvelope},
		{"unknown field", with(func(m map[string]any) { m["extra"] = sigs }), scai.ErrEnvelope},
		{"case folded field", []byte(strings.Replace(string(good), `"payloadType"`, `"PayloadType"`, 1)), scai.ErrEnvelope},
		{"duplicate field", []byte(strings.Replace(string(good), `{`, `{"payload":"AAAA",`, 1)), scai.ErrEnvelope},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env, err := scai.ParseEnvelope(tc.in)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err == nil {
				if _, err := scai.Open(env); err != nil {
					t.Errorf("Open: %v", err)
				}
			}
		})
	}
}

func indent(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestParseBundle(t *testing.T) {
	k := seededKey(t, "bundle")
	var envs [][]byte
	for _, p := range []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete} {
		envs = append(envs, signed(t, k, newAttestation(t, p, k.Public())))
	}
	jsonl := bytes.Join(envs, []byte("\n"))
	tests := []struct {
		name     string
		in       []byte
		want     int
		wantErr  error
		wantLine string
	}{
		{name: "single compact", in: envs[0], want: 1},
		{name: "single indented", in: indent(t, envs[0]), want: 1},
		{name: "jsonl", in: append(bytes.Clone(jsonl), '\n'), want: 4},
		{name: "jsonl with blank lines and CRLF", in: []byte("\n\n" + string(envs[0]) + "\r\n   \r\n" + string(envs[1]) + "\r\n"), want: 2},
		{name: "empty", in: []byte("\n \n"), wantErr: scai.ErrEnvelope},
		{name: "bad line", in: []byte(string(envs[0]) + "\n\n{\"payloadType\":1}\n" + string(envs[1])), wantErr: scai.ErrEnvelope, wantLine: "line 3"},
		{name: "truncated last line", in: jsonl[:len(jsonl)-3], wantErr: scai.ErrEnvelope, wantLine: "line 4"},
		{name: "indented bad", in: indent(t, []byte(strings.Replace(string(envs[0]), scai.PayloadType, "x", 1))), wantErr: scai.ErrPayloadType},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scai.ParseBundle(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantLine) {
					t.Fatalf("got %v, want %v naming %q", err, tc.wantErr, tc.wantLine)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.want {
				t.Fatalf("got %d envelopes, want %d", len(got), tc.want)
			}
			for i, e := range got {
				o, err := scai.Open(e)
				if err != nil {
					t.Fatalf("envelope %d: %v", i, err)
				}
				if err := scai.VerifySignature(e, k.Public()); err != nil {
					t.Fatalf("envelope %d: %v", i, err)
				}
				_ = o
			}
		})
	}
}
