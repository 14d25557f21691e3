package scai_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/types/known/structpb"
)

// Benchmarks of the hot paths: building, signing and opening one
// attestation of each purpose, with evidence of realistic sizes (a TPM
// quote, certificates and a 32 KiB firmware event log), 10 request
// descriptors at dispatch and 256 inputs and 256 outputs at completion.
//
//	go test -run '^$' -bench . -benchmem ./scai/

// pseudoRandom returns n deterministic bytes.
func pseudoRandom(seed string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	h := sha256.Sum256([]byte(seed))
	for len(out) < n {
		out = append(out, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return out[:n]
}

// benchParts are TPM evidence parts of the sizes a real TPM backend ships.
func benchParts() []attest.Part {
	sizes := []struct {
		name, mt string
		n        int
	}{
		{"tpm/ak-public", "application/vnd.tcg.tpm2.tpmt-public", 280},
		{"tpm/ek-cert", "application/pkix-cert", 1200},
		{"tpm/env-key-public", "application/vnd.tcg.tpm2.tpmt-public", 90},
		{"tpm/certify-info", "application/vnd.tcg.tpm2.tpms-attest", 150},
		{"tpm/certify-signature", "application/vnd.tcg.tpm2.tpmt-signature", 72},
		{"tpm/quote-info", "application/vnd.tcg.tpm2.tpms-attest", 145},
		{"tpm/quote-signature", "application/vnd.tcg.tpm2.tpmt-signature", 72},
		{"tpm/pcrs", "application/json", 1500},
		{"tpm/eventlog", "application/vnd.tcg.pcclient-eventlog", 32 << 10},
	}
	var ps []attest.Part
	for _, s := range sizes {
		ps = append(ps, attest.Part{Name: s.name, MediaType: s.mt, Data: pseudoRandom(s.name, s.n)})
	}
	return ps
}

// benchDescriptors returns n build descriptors; every fourth has nested
// annotations.
func benchDescriptors(tb testing.TB, kind string, n int) []*ita.ResourceDescriptor {
	tb.Helper()
	out := make([]*ita.ResourceDescriptor, n)
	for i := range out {
		d := sha256.Sum256([]byte(fmt.Sprintf("%s %d", kind, i)))
		rd := &ita.ResourceDescriptor{
			Name:   fmt.Sprintf("%s/pkg-%03d.tar.gz", kind, i),
			Uri:    fmt.Sprintf("https://artifacts.example.com/%s/pkg-%03d.tar.gz", kind, i),
			Digest: map[string]string{"sha256": fmt.Sprintf("%x", d)},
		}
		if i%4 == 0 {
			ann, err := structpb.NewStruct(map[string]any{
				"builder": map[string]any{"id": "https://ci.example.com/runner", "version": 3},
				"tags":    []any{"release", "amd64", i},
				"signed":  true,
			})
			if err != nil {
				tb.Fatal(err)
			}
			rd.Annotations = ann
		}
		out[i] = rd
	}
	return out
}

// benchAttestation is newAttestation with realistic evidence and build
// descriptors.
func benchAttestation(tb testing.TB, purpose attest.Purpose, k *ecdsa.PrivateKey) *scai.Attestation {
	tb.Helper()
	a := newAttestation(tb, purpose, k.Public())
	a.Evidence = []*attest.Evidence{{Backend: "tpm", Parts: benchParts()}}
	switch purpose {
	case attest.PurposeDispatch:
		req := benchDescriptors(tb, "request", 10)
		req[0] = &ita.ResourceDescriptor{Name: "source", Uri: "git+https://example.com/repo", Digest: map[string]string{"gitCommit": strings.Repeat("a", 40)}}
		req[1] = &ita.ResourceDescriptor{Name: "entryPoint", Content: []byte("make release")}
		a.Build.Request = req
	case attest.PurposeComplete:
		a.Build.Inputs = benchDescriptors(tb, "input", scai.MaxDescriptors)
		a.Build.Outputs = benchDescriptors(tb, "output", scai.MaxDescriptors)
	}
	kd, err := attest.KeyDigest(k.Public())
	if err != nil {
		tb.Fatal(err)
	}
	data, err := scai.BindingData(a)
	if err != nil {
		tb.Fatal(err)
	}
	a.Binding = attest.Bind(purpose, kd, data)
	return a
}

var benchPurposes = []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete}

// perPurpose runs one benchmark per purpose: setup prepares what op needs
// from that purpose's attestation and returns the operation timed.
func perPurpose(b *testing.B, setup func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error) {
	k := seededKey(b, "bench")
	for _, p := range benchPurposes {
		b.Run(string(p), func(b *testing.B) {
			op := setup(b, benchAttestation(b, p, k), k)
			b.ReportAllocs()
			for b.Loop() {
				if err := op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkNewStatement is NewStatement alone.
func BenchmarkNewStatement(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, _ *ecdsa.PrivateKey) func() error {
		return func() error { _, err := scai.NewStatement(a); return err }
	})
}

// BenchmarkSign is Sign of a built statement with an in-memory P-256 key
// (ECDSA sign and the self-check verify included).
func BenchmarkSign(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		st, err := scai.NewStatement(a)
		if err != nil {
			b.Fatal(err)
		}
		return func() error { _, err := scai.Sign(context.Background(), k, st); return err }
	})
}

// BenchmarkAgent is the scai part of one agent attestation as the agent
// did it before issue 12: ExpectedBinding, NewStatement, Sign.
func BenchmarkAgent(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		return func() error {
			if _, err := scai.ExpectedBinding(a); err != nil {
				return err
			}
			st, err := scai.NewStatement(a)
			if err != nil {
				return err
			}
			_, err = scai.Sign(context.Background(), k, st)
			return err
		}
	})
}

// BenchmarkEncode is Encode alone (the payload, no Statement).
func BenchmarkEncode(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, _ *ecdsa.PrivateKey) func() error {
		return func() error { _, err := scai.Encode(a); return err }
	})
}

// BenchmarkSignPayload is SignPayload of an encoded payload with an
// in-memory P-256 key.
func BenchmarkSignPayload(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		payload, err := scai.Encode(a)
		if err != nil {
			b.Fatal(err)
		}
		return func() error { _, err := scai.SignPayload(context.Background(), k, payload); return err }
	})
}

// BenchmarkAgentEncode is the scai part of one agent attestation with the
// API of issue 12: ExpectedBinding, Encode, SignPayload.
func BenchmarkAgentEncode(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		return func() error {
			if _, err := scai.ExpectedBinding(a); err != nil {
				return err
			}
			payload, err := scai.Encode(a)
			if err != nil {
				return err
			}
			_, err = scai.SignPayload(context.Background(), k, payload)
			return err
		}
	})
}

// BenchmarkCheckDescriptors is BenchmarkDescriptors with CheckRequest and
// CheckIO (check and digest in one pass).
func BenchmarkCheckDescriptors(b *testing.B) {
	k := seededKey(b, "bench")
	b.Run("dispatch", func(b *testing.B) {
		req := benchAttestation(b, attest.PurposeDispatch, k).Build.Request
		b.ReportAllocs()
		for b.Loop() {
			if _, err := scai.CheckRequest(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("complete", func(b *testing.B) {
		bd := benchAttestation(b, attest.PurposeComplete, k).Build
		b.ReportAllocs()
		for b.Loop() {
			if _, err := scai.CheckIO(bd.Inputs, bd.Outputs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifySignature is VerifySignature of a parsed envelope.
func BenchmarkVerifySignature(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		env := benchEnvelope(b, k, a)
		return func() error { return scai.VerifySignature(env, k.Public()) }
	})
}

// BenchmarkVerifyDSSE is what VerifySignature cost when it used the DSSE
// library's verifier (decode, PAE copy), for comparison.
func BenchmarkVerifyDSSE(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		env := benchEnvelope(b, k, a)
		return func() error { return dsseVerify(env, k.Public()) }
	})
}

// BenchmarkDescriptors is the agent's check of a dispatch request or a
// completion's inputs and outputs before it attests.
func BenchmarkDescriptors(b *testing.B) {
	k := seededKey(b, "bench")
	b.Run("dispatch", func(b *testing.B) {
		req := benchAttestation(b, attest.PurposeDispatch, k).Build.Request
		b.ReportAllocs()
		for b.Loop() {
			if err := scai.CheckDescriptors("request", req, false); err != nil {
				b.Fatal(err)
			}
			if _, err := scai.RequestDigest(req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("complete", func(b *testing.B) {
		bd := benchAttestation(b, attest.PurposeComplete, k).Build
		b.ReportAllocs()
		for b.Loop() {
			if err := scai.CheckDescriptors("input", bd.Inputs, true); err != nil {
				b.Fatal(err)
			}
			if err := scai.CheckDescriptors("output", bd.Outputs, true); err != nil {
				b.Fatal(err)
			}
			if _, err := scai.IODigest(bd.Inputs, bd.Outputs); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOpen is Open of a parsed envelope (no signature check).
func BenchmarkOpen(b *testing.B) {
	perPurpose(b, func(b *testing.B, a *scai.Attestation, k *ecdsa.PrivateKey) func() error {
		env := benchEnvelope(b, k, a)
		return func() error { _, err := scai.Open(env); return err }
	})
}

func benchEnvelope(b *testing.B, k *ecdsa.PrivateKey, a *scai.Attestation) *dsse.Envelope {
	b.Helper()
	env, err := scai.ParseEnvelope(signed(b, k, a))
	if err != nil {
		b.Fatal(err)
	}
	return env
}
