package fleet_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/verify"
)

// certs reads a PEM certificate file of swtpm's local CA.
func certs(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := verify.ParsePEMCertificates(b)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestRegistration relays AK registration through the service on swtpm,
// whose EK certificate chains to its local CA: StartRegistration → the
// TPM's ActivateCredential → FinishRegistration; the AK is then trusted
// for the admission (the policy trusts no AK of its own). Needs swtpm.
func TestRegistration(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	roots := x509.NewCertPool()
	for _, c := range certs(t, sw.RootCert) {
		roots.AddCert(c)
	}
	f := newFleet(t, func(c *fleet.Config) {
		c.EKRoots, c.EKIntermediates = roots, certs(t, sw.IssuerCert)
	})
	b, err := tpm.Open(tpm.Config{Device: "unix:" + sw.Socket, PCR: 13, FirmwareLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatalf("open swtpm: %v", err)
	}
	e := launch(t, b, 13)
	ctx := context.Background()
	start := func() *fleetv1.StartRegistrationResponse {
		t.Helper()
		r, err := f.StartRegistration(ctx, &fleetv1.StartRegistrationRequest{LaunchAttestation: e.LaunchAttestation()})
		if err != nil {
			t.Fatalf("StartRegistration: %v", err)
		}
		return r
	}
	finish := func(r *fleetv1.StartRegistrationResponse, secret []byte) (*fleetv1.FinishRegistrationResponse, error) {
		return f.FinishRegistration(ctx, &fleetv1.FinishRegistrationRequest{RegistrationId: r.GetRegistrationId(), Secret: secret})
	}

	// Before registration the AK is not trusted.
	nonce := f.challenge(t)
	if _, err := e.Attest(ctx, nonce); err != nil {
		t.Fatal(err)
	}
	_, err = f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: e.bundle()})
	wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonVerificationFailed)

	t.Run("wrong secret", func(t *testing.T) {
		r := start()
		_, err := finish(r, []byte("not the secret"))
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonActivationFailed)
		_, err = finish(r, []byte("a second try"))
		wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonNonceUsed)
	})
	r := start()
	secret, err := b.ActivateCredential(ctx, r.GetCredentialBlob(), r.GetEncryptedSecret())
	if err != nil {
		t.Fatalf("attestd ActivateCredential: %v", err)
	}
	done, err := finish(r, secret)
	if err != nil {
		t.Fatalf("FinishRegistration: %v", err)
	}
	if done.GetAkDigest() != r.GetAkDigest() {
		t.Fatalf("registered AK %s, the challenge was for %s", done.GetAkDigest(), r.GetAkDigest())
	}
	// Admitted now, with a fresh challenge, through the registered AK
	// only (no policy trusts it).
	nonce = f.challenge(t)
	if _, err := e.Attest(ctx, nonce); err != nil {
		t.Fatal(err)
	}
	got, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: e.bundle()})
	if err != nil {
		t.Fatalf("admission with the registered AK: %v", err)
	}
	if got.GetEnvironment().GetAkDigest() != done.GetAkDigest() {
		t.Errorf("admitted with AK %s, registered %s", got.GetEnvironment().GetAkDigest(), done.GetAkDigest())
	}

	t.Run("untrusted EK", func(t *testing.T) {
		g := newFleet(t, func(c *fleet.Config) { c.EKRoots = x509.NewCertPool() })
		_, err := g.StartRegistration(ctx, &fleetv1.StartRegistrationRequest{LaunchAttestation: e.LaunchAttestation()})
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonEKUntrusted)
	})
	t.Run("registration off", func(t *testing.T) {
		g := newFleet(t)
		_, err := g.StartRegistration(ctx, &fleetv1.StartRegistrationRequest{LaunchAttestation: e.LaunchAttestation()})
		wantRefusal(t, err, codes.PermissionDenied, fleet.ReasonEKUntrusted)
	})
}

// TestRegistrationWithoutEKCert: the simulator's TPM has no EK
// certificate: NO_TPM.
func TestRegistrationWithoutEKCert(t *testing.T) {
	f := newFleet(t, func(c *fleet.Config) { c.EKRoots = x509.NewCertPool() })
	e := newEnv(t, 0)
	_, err := f.StartRegistration(context.Background(), &fleetv1.StartRegistrationRequest{LaunchAttestation: e.LaunchAttestation()})
	wantRefusal(t, err, codes.FailedPrecondition, fleet.ReasonNoTPM)
}
