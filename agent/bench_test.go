package agent

import (
	"context"
	"testing"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/internal/swtpmtest"
)

// BenchmarkAttestGRPCSimulator is one full fresh attestation (quote, SCAI
// statement, DSSE signature by the TPM env key) over the unix socket, on the
// in-process simulator.
func BenchmarkAttestGRPCSimulator(b *testing.B) {
	_, _, c := serve(b)
	benchAttest(b, c)
}

// BenchmarkAttestGRPCSwtpm is the same against swtpm over its unix socket.
func BenchmarkAttestGRPCSwtpm(b *testing.B) {
	sw := swtpmtest.StartTPM(b)
	be, err := tpm.Open(tpm.Config{Device: "unix:" + sw.Socket})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	_, _, c := serveOn(b, be)
	benchAttest(b, c)
}

func benchAttest(b *testing.B, c *apiv1.Client) {
	ctx := context.Background()
	req := &apiv1.AttestRequest{Nonce: []byte("benchmark nonce, 32 bytes long!!")}
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Attest(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestDirectSwtpm is Agent.Attest on swtpm without gRPC: with
// BenchmarkAttestGRPCSwtpm it splits an attestation's cost between the
// daemon's own work and the RPC.
func BenchmarkAttestDirectSwtpm(b *testing.B) {
	sw := swtpmtest.StartTPM(b)
	be, err := tpm.Open(tpm.Config{Device: "unix:" + sw.Socket})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { be.Close() })
	a, _, _ := serveOn(b, be)
	ctx := context.Background()
	nonce := []byte("benchmark nonce, 32 bytes long!!")
	b.ResetTimer()
	for b.Loop() {
		if _, err := a.Attest(ctx, nonce); err != nil {
			b.Fatal(err)
		}
	}
}
