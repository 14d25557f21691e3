package fleet_test

import (
	"context"
	"crypto/x509"
	"strings"
	"testing"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/fleet"
	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/verify"
)

// TestPGEndToEndAcrossReplicas is TestEndToEndOnSwtpm as a fleet runs it:
// the real attestd binary on swtpm, driven through 3 replicas on one
// PostgreSQL, each step on another replica than the step before — so every
// bit of state between steps (the pending AK registration, the nonces, the
// environment, the build) is in the database, never in a replica. Needs
// swtpm and postgresql.
func TestPGEndToEndAcrossReplicas(t *testing.T) {
	sw := swtpmtest.StartTPM(t)
	roots := x509.NewCertPool()
	for _, c := range certs(t, sw.RootCert) {
		roots.AddCert(c)
	}
	_, r := pgFleet(t, pgReplicas, func(c *fleet.Config) { c.EKRoots, c.EKIntermediates = roots, certs(t, sw.IssuerCert) })
	a := startAttestd(t, sw)
	ctx := context.Background()

	id, err := a.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := r[0].StartRegistration(ctx, &fleetv1.StartRegistrationRequest{LaunchAttestation: id.GetLaunchAttestation()})
	if err != nil {
		t.Fatalf("StartRegistration on replica 0: %v", err)
	}
	act, err := a.ActivateCredential(ctx, &apiv1.ActivateCredentialRequest{CredentialBlob: reg.GetCredentialBlob(), EncryptedSecret: reg.GetEncryptedSecret()})
	if err != nil {
		t.Fatalf("attestd ActivateCredential: %v", err)
	}
	if _, err := r[1].FinishRegistration(ctx, &fleetv1.FinishRegistrationRequest{RegistrationId: reg.GetRegistrationId(), Secret: act.GetSecret()}); err != nil {
		t.Fatalf("FinishRegistration on replica 1: %v", err)
	}

	nonce := r[2].challenge(t)
	if _, err := a.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce}); err != nil {
		t.Fatalf("attestd Attest: %v", err)
	}
	adm, err := r[0].Admit(ctx, &fleetv1.AdmitRequest{Nonce: nonce, Bundle: bundleOf(t, a)})
	if err != nil {
		t.Fatalf("Admit on replica 0: %v", err)
	}
	if adm.GetEnvironment().GetKeyDigest() != id.GetKeyDigest() || adm.GetEnvironment().GetAkDigest() != reg.GetAkDigest() {
		t.Fatalf("admitted %v; attestd's key is %s, the registered AK %s", adm.GetEnvironment(), id.GetKeyDigest(), reg.GetAkDigest())
	}

	const build = "e2e-pg-1"
	dispatchNonce := r[1].dispatch(t, id.GetKeyDigest(), build)
	if _, err := a.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: build, Nonce: dispatchNonce}); err != nil {
		t.Fatalf("attestd BindBuild: %v", err)
	}
	if _, err := r[2].ConfirmDispatch(ctx, &fleetv1.ConfirmDispatchRequest{BuildId: build, Bundle: bundleOf(t, a)}); err != nil {
		t.Fatalf("ConfirmDispatch on replica 2: %v", err)
	}

	c, err := r[0].Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_COMPLETE, BuildId: build})
	if err != nil {
		t.Fatalf("completion challenge on replica 0: %v", err)
	}
	out := &apiv1.ResourceDescriptor{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}
	in := &apiv1.ResourceDescriptor{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}
	if _, err := a.Complete(ctx, &apiv1.CompleteRequest{BuildId: build, Inputs: []*apiv1.ResourceDescriptor{in}, Outputs: []*apiv1.ResourceDescriptor{out}, Nonce: c.GetNonce()}); err != nil {
		t.Fatalf("attestd Complete: %v", err)
	}
	if _, err := a.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: build, Statement: []byte(provenance)}); err != nil {
		t.Fatalf("attestd SignStatement: %v", err)
	}
	done, err := r[1].Complete(ctx, &fleetv1.CompleteRequest{BuildId: build, Bundle: bundleOf(t, a)})
	if err != nil {
		t.Fatalf("Complete on replica 1: %v", err)
	}
	typ, vsa := statement(t, done.GetBuild().GetCompletion())
	if typ != verify.VSAPredicateType || vsa["verificationResult"] != verify.VSAPassed {
		t.Fatalf("completion result: %s %v, want a PASSED VSA", typ, vsa)
	}
	b, err := r[2].GetBuild(ctx, &fleetv1.GetBuildRequest{BuildId: build})
	if err != nil || b.GetState() != string(fleet.BuildCompleted) || string(b.GetCompletion()) != string(done.GetBuild().GetCompletion()) {
		t.Fatalf("the build on replica 2: %v, %v; want completed with the VSA replica 1 issued", b, err)
	}
}
