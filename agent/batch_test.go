package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// gatedBackend holds every Evidence call until the test opens the gate, and
// counts the calls and the bindings asked for.
type gatedBackend struct {
	attest.Backend
	mu       sync.Mutex
	calls    int
	entered  chan struct{} // one send per call, when it starts
	gate     chan struct{} // closed: calls proceed
	bindings []attest.Binding
}

func newGated(b attest.Backend) *gatedBackend {
	g := &gatedBackend{Backend: b, entered: make(chan struct{}, 100), gate: make(chan struct{})}
	close(g.gate)
	return g
}

func (g *gatedBackend) Evidence(ctx context.Context, b attest.Binding) (*attest.Evidence, error) {
	g.mu.Lock()
	g.calls++
	g.bindings = append(g.bindings, b)
	gate := g.gate
	g.mu.Unlock()
	g.entered <- struct{}{}
	<-gate
	return g.Backend.Evidence(ctx, b)
}

// hold makes the next Evidence calls wait until release.
func (g *gatedBackend) hold() (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
	gate := g.gate
	return sync.OnceFunc(func() { close(gate) })
}

func (g *gatedBackend) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// waitQueued waits until n callers are queued behind the quote in progress.
func waitQueued(t *testing.T, a *Agent, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		a.batch.mu.Lock()
		q := len(a.batch.queue)
		a.batch.mu.Unlock()
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 2 minutes for %d callers to queue behind the quote; %d did", n, q)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBatchedAdmissions: callers that arrive while a quote is in progress
// are answered by one quote; each answer verifies with its own nonce and
// fails with anyone else's.
func TestBatchedAdmissions(t *testing.T) {
	g := newGated(newBackend(t, openSim(t)))
	a := newFixture(t).agent(t, g)
	ctx := context.Background()
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	<-g.entered // the launch quote
	release := g.hold()
	defer release()

	// The first caller takes the device; the next ones queue behind it.
	const n = 9
	results := make([]*Attestation, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	call := func(i int) {
		defer wg.Done()
		results[i], errs[i] = a.Attest(ctx, []byte(fmt.Sprintf("nonce-%02d", i)))
	}
	wg.Add(1)
	go call(0)
	<-g.entered
	for i := 1; i < n; i++ {
		wg.Add(1)
		go call(i)
	}
	waitQueued(t, a, n-1)
	release()
	wg.Wait()

	if got := g.count(); got != 3 { // launch, the lone first caller, one batch of 8
		t.Fatalf("%d quotes for the launch and %d callers, want 3", got, n)
	}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		batched := i > 0
		if (results[i].Proof != nil) != batched {
			t.Fatalf("caller %d: proof %q, batched %v", i, results[i].Proof, batched)
		}
		nonce := []byte(fmt.Sprintf("nonce-%02d", i))
		mustVerify(t, results[i].Encode(), verify.Options{Nonce: nonce, TrustedAKs: []crypto.PublicKey{g.Backend.(interface{ AKPublic() crypto.PublicKey }).AKPublic()}})
		other := verifyEnvelope(t, results[i].Encode(), verify.Options{Nonce: []byte("nonce-99"), InsecureTrustEmbeddedAK: true})
		if other.OK || !contains(other.Failed(), verify.CheckNonce) {
			t.Fatalf("caller %d verified with another nonce: failed %v", i, other.Failed())
		}
	}
	// Callers 1..8 share one envelope; the batch binding is what was quoted.
	for i := 2; i < n; i++ {
		if string(results[i].Envelope) != string(results[1].Envelope) {
			t.Fatalf("callers 1 and %d of one batch got different envelopes", i)
		}
	}
	// A proof lifted onto the shared envelope without the bundle's log
	// still cannot stand in for another caller.
	p, err := scai.ParseInclusionProof(results[3].Proof)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Nonce) != "nonce-03" || p.Size != n-1 {
		t.Fatalf("proof of caller 3: nonce %q, batch of %d", p.Nonce, p.Size)
	}

	// The bundle keeps the newest admissions with their proofs and verifies.
	rep := verify.BundleReport(a.Bundle().Encode(), verify.Options{InsecureTrustEmbeddedAK: true, Verifiers: testVerifiers()})
	if !rep.OK {
		t.Fatalf("bundle with batched admissions: %v", rep.Failed())
	}
}

// TestBatchDeadlineAndBadInput: a caller whose deadline passes while queued
// gets DeadlineExceeded and its leaf is not quoted; a bad nonce is refused
// before it can join a batch.
func TestBatchDeadlineAndBadInput(t *testing.T) {
	g := newGated(newBackend(t, openSim(t)))
	a := newFixture(t).agent(t, g)
	ctx := context.Background()
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	release := g.hold()
	defer release()

	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.Attest(ctx, []byte("first")) }()
	<-g.entered

	// The quote in progress is held until release: the deadline passes
	// while this caller is queued, however slow the machine.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	expired := make(chan error, 1)
	go func() { _, err := a.Attest(short, []byte("impatient")); expired <- err }()
	waitQueued(t, a, 1)
	if err := <-expired; !errors.Is(err, context.DeadlineExceeded) || statusCode(err) != codes.DeadlineExceeded {
		t.Fatalf("queued caller whose deadline passed: %v", err)
	}
	if _, err := a.Attest(ctx, make([]byte, attest.MaxNonceSize+1)); !errors.Is(err, attest.ErrNonceSize) {
		t.Fatalf("oversized nonce: %v", err)
	}
	var second *Attestation
	wg.Add(1)
	go func() {
		defer wg.Done()
		var err error
		if second, err = a.Attest(ctx, []byte("patient")); err != nil {
			t.Errorf("patient caller: %v", err)
		}
	}()
	waitQueued(t, a, 2) // the cancelled caller is still in the queue, skipped at batch time
	release()
	wg.Wait()
	if second == nil {
		t.FailNow()
	}
	// The cancelled caller was skipped: the patient one was answered alone,
	// in the single-binding form.
	if second.Proof != nil {
		t.Fatalf("the patient caller shared a batch with a caller whose context had ended")
	}
	if got := g.count(); got != 3 {
		t.Fatalf("%d quotes, want 3 (launch, first, patient)", got)
	}
}
