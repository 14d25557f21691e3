package fleet_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/agent"
	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/verify"
)

// startAttestd builds attestd (CGO_ENABLED=0, as shipped) and runs it on
// swtpm; it returns a client of its socket.
func startAttestd(t *testing.T, sw *swtpmtest.TPM) *apiv1.Client {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "./cmd/attestd")
	build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build attestd: %v\n%s", err, out)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("backend: tpm\nexecutors: [/bin/sh]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	ctx, cancel := context.WithCancel(context.Background())
	daemon := exec.CommandContext(ctx, filepath.Join(bin, "attestd"), "--config", cfg, "--runtime-dir", run, "--tpm-device", "unix:"+sw.Socket)
	var dlog bytes.Buffer
	daemon.Stderr = &dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); daemon.Wait() })
	sock := filepath.Join(run, agent.SocketName)
	c, err := apiv1.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Wait for the launch: the socket answers GetIdentity once attestd
	// has measured the environment (generous: the machine may be loaded).
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{}); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for attestd to serve:\n%s", dlog.String())
		}
	}
}

// bundleOf is attestd's GetBundle as the bundle file the service takes.
func bundleOf(t *testing.T, c *apiv1.Client) []byte {
	t.Helper()
	b, err := c.GetBundle(context.Background(), &apiv1.GetBundleRequest{})
	if err != nil {
		t.Fatalf("attestd GetBundle: %v", err)
	}
	return (&agent.Bundle{Envelopes: b.GetEnvelopes(), Proofs: b.GetInclusionProofs(), EventLog: b.GetEventLog()}).Encode()
}

// TestEndToEndOnSwtpm drives a real attestd (the binary, on swtpm) through
// the service, as a control plane and its executor do: AK registration
// relayed (StartRegistration → ActivateCredential → FinishRegistration),
// challenge → Attest → admit, dispatch → BindBuild → confirm, completion
// challenge → Complete → SignStatement → complete → a PASSED VSA. The
// policy trusts no AK: the registered one is the only anchor. Needs swtpm.
func TestEndToEndOnSwtpm(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	roots := x509.NewCertPool()
	for _, c := range certs(t, sw.RootCert) {
		roots.AddCert(c)
	}
	f := newFleet(t, func(c *fleet.Config) { c.EKRoots, c.EKIntermediates = roots, certs(t, sw.IssuerCert) })
	a := startAttestd(t, sw)
	ctx := context.Background()

	id, err := a.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := f.StartRegistration(ctx, &fleetv1.StartRegistrationRequest{LaunchAttestation: id.GetLaunchAttestation()})
	if err != nil {
		t.Fatalf("StartRegistration: %v", err)
	}
	act, err := a.ActivateCredential(ctx, &apiv1.ActivateCredentialRequest{CredentialBlob: reg.GetCredentialBlob(), EncryptedSecret: reg.GetEncryptedSecret()})
	if err != nil {
		t.Fatalf("attestd ActivateCredential: %v", err)
	}
	if _, err := f.FinishRegistration(ctx, &fleetv1.FinishRegistrationRequest{RegistrationId: reg.GetRegistrationId(), Secret: act.GetSecret()}); err != nil {
		t.Fatalf("FinishRegistration: %v", err)
	}

	nonce := f.challenge(t)
	if _, err := a.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce}); err != nil {
		t.Fatalf("attestd Attest: %v", err)
	}
	adm, err := f.Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: bundleOf(t, a)})
	if err != nil {
		t.Fatalf("Admit: %v", err)
	}
	if adm.GetEnvironment().GetKeyDigest() != id.GetKeyDigest() || adm.GetEnvironment().GetAkDigest() != reg.GetAkDigest() {
		t.Fatalf("admitted %v; attestd's key is %s, the registered AK %s", adm.GetEnvironment(), id.GetKeyDigest(), reg.GetAkDigest())
	}

	const build = "e2e-fleet-1"
	dispatchNonce := f.dispatch(t, id.GetKeyDigest(), build)
	if _, err := a.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: build, Nonce: dispatchNonce}); err != nil {
		t.Fatalf("attestd BindBuild: %v", err)
	}
	if _, err := f.ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bundleOf(t, a)}); err != nil {
		t.Fatalf("ConfirmDispatch: %v", err)
	}

	c, err := f.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_COMPLETE, BuildId: build})
	if err != nil {
		t.Fatal(err)
	}
	out := &apiv1.ResourceDescriptor{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}
	in := &apiv1.ResourceDescriptor{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}
	if _, err := a.Complete(ctx, &apiv1.CompleteRequest{BuildId: build, Inputs: []*apiv1.ResourceDescriptor{in}, Outputs: []*apiv1.ResourceDescriptor{out}, Nonce: c.GetNonce()}); err != nil {
		t.Fatalf("attestd Complete: %v", err)
	}
	if _, err := a.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: build, Statement: []byte(provenance)}); err != nil {
		t.Fatalf("attestd SignStatement: %v", err)
	}
	done, err := f.Complete(ctx, &fleetv1.CompleteRequest{BuildId: build, Bundle: bundleOf(t, a)})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	typ, vsa := statement(t, done.GetBuild().GetCompletion())
	if typ != verify.VSAPredicateType || vsa["verificationResult"] != verify.VSAPassed {
		t.Fatalf("completion result: %s %v, want a PASSED VSA", typ, vsa)
	}
	t.Logf("VSA verifiedLevels %v", vsa["verifiedLevels"])
}
