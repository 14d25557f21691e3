package agent

import (
	"context"
	"crypto"
	"strings"
	"testing"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verify"
)

var (
	testRequest = []*ita.ResourceDescriptor{
		{Name: "source", Uri: "git+https://example.com/app", Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)}},
		{Name: "entryPoint", Content: []byte("make all")},
	}
	testInputs  = []*ita.ResourceDescriptor{{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}}
	testOutputs = []*ita.ResourceDescriptor{{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}}
)

func provenance(subjectDigest string) []byte {
	return []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + subjectDigest +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`)
}

// toPhase drives a fresh served agent to phase p.
func toPhase(t *testing.T, c *apiv1.Client, p phase) {
	t.Helper()
	ctx := context.Background()
	if p == phaseLaunched {
		return
	}
	if _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1", Request: ToAPI(testRequest), Nonce: []byte("n1")}); err != nil {
		t.Fatalf("BindBuild: %v", err)
	}
	if p == phaseDispatched {
		return
	}
	if _, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: "build-1", Inputs: ToAPI(testInputs), Outputs: ToAPI(testOutputs)}); err != nil {
		t.Fatalf("Complete: %v", err)
	}
}

// TestLifecycleStateMachine calls every method in every phase.
func TestLifecycleStateMachine(t *testing.T) {
	type call func(c *apiv1.Client) error
	ctx := context.Background()
	calls := map[string]call{
		"Attest": func(c *apiv1.Client) error {
			_, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: []byte("x")})
			return err
		},
		"BindBuild same": func(c *apiv1.Client) error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1", Request: ToAPI(testRequest)})
			return err
		},
		"BindBuild other": func(c *apiv1.Client) error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-2", Request: ToAPI(testRequest)})
			return err
		},
		"BindBuild same ID other request": func(c *apiv1.Client) error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1"})
			return err
		},
		"Extend": func(c *apiv1.Client) error {
			_, err := c.Extend(ctx, &apiv1.ExtendRequest{Domain: "deps", Operation: "fetch", Content: []byte("sha256:abc")})
			return err
		},
		"Complete": func(c *apiv1.Client) error {
			_, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: "build-1", Inputs: ToAPI(testInputs), Outputs: ToAPI(testOutputs)})
			return err
		},
		"Complete other ID": func(c *apiv1.Client) error {
			_, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: "build-2", Outputs: ToAPI(testOutputs)})
			return err
		},
		"SignStatement": func(c *apiv1.Client) error {
			_, err := c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: "build-1", Statement: provenance(strings.Repeat("3", 64))})
			return err
		},
		"GetBundle": func(c *apiv1.Client) error {
			_, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
			return err
		},
	}
	OK, FP := codes.OK, codes.FailedPrecondition
	want := map[phase]map[string]codes.Code{
		phaseLaunched: {"Attest": OK, "BindBuild same": OK, "BindBuild other": OK, "BindBuild same ID other request": OK,
			"Extend": FP, "Complete": FP, "Complete other ID": FP, "SignStatement": FP, "GetBundle": OK},
		phaseDispatched: {"Attest": OK, "BindBuild same": OK, "BindBuild other": FP, "BindBuild same ID other request": FP,
			"Extend": OK, "Complete": OK, "Complete other ID": FP, "SignStatement": FP, "GetBundle": OK},
		phaseCompleted: {"Attest": OK, "BindBuild same": FP, "BindBuild other": FP, "BindBuild same ID other request": FP,
			"Extend": FP, "Complete": FP, "Complete other ID": FP, "SignStatement": OK, "GetBundle": OK},
	}
	for _, p := range []phase{phaseLaunched, phaseDispatched, phaseCompleted} {
		for name, fn := range calls {
			t.Run(string(p)+"/"+name, func(t *testing.T) {
				_, _, c := serve(t)
				toPhase(t, c, p)
				err := fn(c)
				if got := status.Code(err); got != want[p][name] {
					t.Fatalf("%s in %s: %v, want %v", name, p, err, want[p][name])
				}
			})
		}
	}
}

func TestLifecycleBadInput(t *testing.T) {
	_, _, c := serve(t)
	ctx := context.Background()
	long := strings.Repeat("x", 257)
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"empty build ID", func() error { _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{}); return err }},
		{"long build ID", func() error { _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: long}); return err }},
		{"build ID with space", func() error { _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "a b"}); return err }},
		{"build ID with newline", func() error { _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "a\nb"}); return err }},
		{"long nonce", func() error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "b", Nonce: make([]byte, 65)})
			return err
		}},
		{"empty descriptor", func() error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "b", Request: []*apiv1.ResourceDescriptor{{}}})
			return err
		}},
		{"unknown digest algorithm", func() error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "b", Request: []*apiv1.ResourceDescriptor{{Name: "x", Digest: map[string]string{"md5": "00"}}}})
			return err
		}},
		{"short sha256", func() error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "b", Request: []*apiv1.ResourceDescriptor{{Name: "x", Digest: map[string]string{"sha256": "abcd"}}}})
			return err
		}},
		{"upper-case hex", func() error {
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "b", Request: []*apiv1.ResourceDescriptor{{Name: "x", Digest: map[string]string{"sha256": strings.Repeat("A", 64)}}}})
			return err
		}},
		{"too many descriptors", func() error {
			req := make([]*apiv1.ResourceDescriptor, 257)
			for i := range req {
				req[i] = &apiv1.ResourceDescriptor{Name: "x"}
			}
			_, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "b", Request: req})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Code(tc.call()); got != codes.InvalidArgument {
				t.Fatalf("got %v, want InvalidArgument", got)
			}
		})
	}
	// Nothing above changed the phase.
	id, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	if err != nil || id.GetPhase() != "launched" {
		t.Fatalf("phase after bad input: %v %v", id.GetPhase(), err)
	}
	toPhase(t, c, phaseDispatched)
	for _, tc := range []struct {
		name string
		req  *apiv1.ExtendRequest
	}{
		{"no domain", &apiv1.ExtendRequest{Operation: "x"}},
		{"no operation", &apiv1.ExtendRequest{Domain: "x"}},
		{"control character", &apiv1.ExtendRequest{Domain: "x\x00", Operation: "y"}},
		{"huge content", &apiv1.ExtendRequest{Domain: "x", Operation: "y", Content: make([]byte, 16<<10+1)}},
	} {
		if _, err := c.Extend(ctx, tc.req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Extend %s: %v", tc.name, err)
		}
	}
	for _, tc := range []struct {
		name string
		req  *apiv1.CompleteRequest
	}{
		{"no outputs", &apiv1.CompleteRequest{BuildId: "build-1"}},
		{"output without digest", &apiv1.CompleteRequest{BuildId: "build-1", Outputs: []*apiv1.ResourceDescriptor{{Name: "a"}}}},
		{"input without digest", &apiv1.CompleteRequest{BuildId: "build-1", Inputs: []*apiv1.ResourceDescriptor{{Name: "a"}}, Outputs: ToAPI(testOutputs)}},
	} {
		if _, err := c.Complete(ctx, tc.req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Complete %s: %v", tc.name, err)
		}
	}
	toPhase2(t, c)
	for _, tc := range []struct {
		name string
		st   []byte
	}{
		{"not JSON", []byte("{")},
		{"unknown field", []byte(`{"_type":"https://in-toto.io/Statement/v1","bogus":1}`)},
		{"subject not an output", provenance(strings.Repeat("4", 64))},
		{"SCAI predicate", []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + strings.Repeat("3", 64) + `"}}],"predicateType":"https://in-toto.io/attestation/scai/v0.3","predicate":{}}`)},
		{"too big", make([]byte, 256<<10+1)},
	} {
		if _, err := c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: "build-1", Statement: tc.st}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("SignStatement %s: %v", tc.name, err)
		}
	}
}

func toPhase2(t *testing.T, c *apiv1.Client) {
	t.Helper()
	if _, err := c.Complete(context.Background(), &apiv1.CompleteRequest{BuildId: "build-1", Inputs: ToAPI(testInputs), Outputs: ToAPI(testOutputs)}); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleBundleVerifies runs the whole lifecycle and verifies the
// bundle as a consumer would.
func TestLifecycleBundleVerifies(t *testing.T) {
	a, _, c := serve(t)
	ctx := context.Background()
	adm := []byte("admission-nonce")
	if _, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: adm}); err != nil {
		t.Fatal(err)
	}
	first, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1", Request: ToAPI(testRequest), Nonce: []byte("dispatch-nonce")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1", Request: ToAPI(testRequest), Nonce: []byte("other")})
	if err != nil || !again.GetRepeated() || string(again.GetEnvelope()) != string(first.GetEnvelope()) {
		t.Fatalf("repeated BindBuild: repeated=%v same=%v err=%v", again.GetRepeated(), string(again.GetEnvelope()) == string(first.GetEnvelope()), err)
	}
	if _, err := c.Extend(ctx, &apiv1.ExtendRequest{Domain: "deps", Operation: "fetch", Content: []byte("pkg@sha256:1234")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: "build-1", Inputs: ToAPI(testInputs), Outputs: ToAPI(testOutputs)}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: "build-1", Statement: provenance(strings.Repeat("3", 64))}); err != nil {
		t.Fatal(err)
	}
	b, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
	if err != nil || len(b.GetEnvelopes()) != 5 || b.GetBuildId() != "build-1" {
		t.Fatalf("bundle: %d envelopes, %v", len(b.GetEnvelopes()), err)
	}
	jsonl := BundleOf(b).Encode()
	ak := a.backend.(interface{ AKPublic() crypto.PublicKey }).AKPublic()
	rep := verify.BundleReport(jsonl, verify.Options{
		Nonces:     map[attest.Purpose][]byte{attest.PurposeAttest: adm, attest.PurposeDispatch: []byte("dispatch-nonce")},
		TrustedAKs: []crypto.PublicKey{ak},
		Verifiers:  testVerifiers(),
	})
	if !rep.OK {
		for _, r := range rep.Results {
			for _, ch := range r.Checks {
				t.Logf("%s %-20s ok=%v skip=%v %s", r.Purpose, ch.Name, ch.OK, ch.Skip, ch.Detail)
			}
		}
		t.Fatalf("bundle not verified: %v", rep.Failed())
	}
}
