package verify_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/snp"
	"github.com/attestd/attestd/attest/snp/snptest"
	"github.com/attestd/attestd/attest/tdx"
	"github.com/attestd/attestd/attest/tdx/tdxtest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// Good bundles of every backend, made by a real agent: TPM on the
// in-process simulator, SEV-SNP and TDX on the test-only fakes.

var (
	teeCreated = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	teeNow     = teeCreated.Add(24 * time.Hour)

	testRequest = []*ita.ResourceDescriptor{
		{Name: "source", Uri: "git+https://example.com/app", Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)}},
	}
	testInputs  = []*ita.ResourceDescriptor{{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}}
	testOutputs = []*ita.ResourceDescriptor{{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}}
	attestNonce = []byte("admission nonce from the control plane")
	dispNonce   = []byte("dispatch nonce")
)

// env is one environment's good bundle and what verifies it.
type env struct {
	backend  string        // tpm, snp, tdx
	bundle   [][]byte      // the signed envelopes
	log      []byte        // the event log they name prefixes of
	signer   crypto.Signer // the env key, to re-sign tampered statements
	verifier attest.Verifier
	opts     verify.Options
	buildID  string
	register string // agent register, "PCR13" / "RTMR3"
	// launch is the agent register after launch (hex) over the launch
	// events other than storage events: the value reference values
	// predict. launchEvents are those events.
	launch       string
	launchEvents []measure.Event
}

func (e *env) raw() []byte { return withLog(e, e.bundle) }

// withLog is envelopes as a bundle that also carries e's event log.
func withLog(e *env, envelopes [][]byte) []byte {
	return scai.EncodeBundle(append(slices.Clone(envelopes), scai.Carrier(scai.PayloadTypeCEL, e.log))...)
}

// fixtures are built once per test binary (the TPM simulator is global).
type fixtures struct {
	tpm, tpmOther, tpmSameKey *env
	snp, snpOther             *env
	tdx, tdxOther             *env
	// storage are TPM environments whose launch recorded a storage
	// event, by layout (storageLayouts).
	storage map[string]*env
	closers []func()
	err     error
}

var (
	fixOnce sync.Once
	fix     fixtures
)

func TestMain(m *testing.M) {
	code := m.Run()
	for _, c := range fix.closers {
		c()
	}
	os.Exit(code)
}

func getFixtures(tb testing.TB) *fixtures {
	tb.Helper()
	fixOnce.Do(func() { fix.err = fix.build() })
	if fix.err != nil {
		tb.Fatalf("fixtures: %v", fix.err)
	}
	return &fix
}

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

func (f *fixtures) build() error {
	tmp, err := os.MkdirTemp("", "verify-fixtures-")
	if err != nil {
		return err
	}
	f.closers = append(f.closers, func() { os.RemoveAll(tmp) })
	sim, err := simulator.Get()
	if err != nil {
		return err
	}
	f.closers = append(f.closers, func() { sim.Close() })
	keyFile := filepath.Join(tmp, "envkey.blob")
	// The simulator holds three transient objects: one backend at a time.
	newTPM := func(pcr int, keyFile string) (*tpm.Backend, error) {
		return tpm.New(nopCloser{sim}, tpm.Config{PCR: pcr, FirmwareLogPath: "/nonexistent", KeyFile: keyFile})
	}
	tv := tpm.Verifier{}
	tb, err := newTPM(13, keyFile)
	if err != nil {
		return err
	}
	akOpts := verify.Options{TrustedAKs: []crypto.PublicKey{tb.AKPublic()}}
	f.tpm, err = lifecycle(tmp, "tpm-a", tb, 13, tv, akOpts, "build-1", nil)
	tb.Close()
	if err != nil {
		return err
	}
	// Another environment on the same TPM (another register, another key).
	tb2, err := newTPM(14, "")
	if err != nil {
		return err
	}
	f.tpmOther, err = lifecycle(tmp, "tpm-b", tb2, 14, tv, akOpts, "build-1", nil)
	tb2.Close()
	if err != nil {
		return err
	}
	// Environments with a storage event, each in a fresh PCR.
	f.storage = map[string]*env{}
	for name, l := range storageLayouts() {
		b, err := newTPM(l.pcr, "")
		if err != nil {
			return err
		}
		f.storage[name], err = lifecycle(tmp, "storage-"+name, b, l.pcr, tv, akOpts, "build-1", l.storage)
		b.Close()
		if err != nil {
			return err
		}
	}
	// The same env key (reloaded from its key file) in a fresh register,
	// dispatched to a second build: each bundle verifies on its own.
	for i, pcr := range []int{15, 13} {
		b, err := newTPM(pcr, keyFile)
		if err != nil {
			return err
		}
		if !b.KeyReused {
			b.Close()
			return errorString("the env key was not reused: " + b.KeyNotReused)
		}
		if i == 0 {
			f.tpmSameKey, err = lifecycle(tmp, "tpm-c", b, 15, tv, akOpts, "build-2", nil)
			b.Close()
			if err != nil {
				return err
			}
			continue
		}
		// Keep the first environment's key loaded to re-sign tampered statements.
		f.tpm.signer = b.Signer()
		f.closers = append([]func(){func() { b.Close() }}, f.closers...)
	}

	sdev, err := snptest.New(teeCreated)
	if err != nil {
		return err
	}
	sv := sdev.Verifier(teeNow)
	for i, dst := range []**env{&f.snp, &f.snpOther} {
		b, err := snp.New(snp.Config{Provider: sdev})
		if err != nil {
			return err
		}
		if *dst, err = lifecycle(tmp, "snp"+string(rune('a'+i)), b, 13, sv, verify.Options{}, "build-1", nil); err != nil {
			return err
		}
	}
	xdev, err := tdxtest.New(teeCreated)
	if err != nil {
		return err
	}
	xv := tdx.Verifier{Roots: xdev.Roots(), InsecureSkipCollateral: true, Now: func() time.Time { return teeNow }}
	xb, err := tdx.New(tdx.Config{Provider: xdev, RTMRs: xdev})
	if err != nil {
		return err
	}
	if f.tdx, err = lifecycle(tmp, "tdx-a", xb, 13, xv, verify.Options{}, "build-1", nil); err != nil {
		return err
	}
	// Another TD: a fresh fake device with its own RTMRs, same roots.
	xdev2, err := tdxtest.New(teeCreated)
	if err != nil {
		return err
	}
	xb2, err := tdx.New(tdx.Config{Provider: xdev2, RTMRs: xdev2})
	if err != nil {
		return err
	}
	xv2 := xv
	xv2.Roots = xdev2.Roots()
	if f.tdxOther, err = lifecycle(tmp, "tdx-b", xb2, 13, xv2, verify.Options{}, "build-1", nil); err != nil {
		return err
	}
	return nil
}

func (f *fixtures) now() time.Time { return teeNow }

type errorString string

func (e errorString) Error() string { return string(e) }

// fixtureRootHash is the roothash= on the fixtures' kernel command line.
var fixtureRootHash = strings.Repeat("ab", 32)

// lifecycle runs launch, admission, dispatch, completion and a signed
// provenance statement on a fresh agent and returns its bundle. A non-nil
// storage is recorded at launch.
func lifecycle(tmp, name string, b attest.Backend, pcr int, v attest.Verifier, opts verify.Options, buildID string, storage *measure.StorageMeasurement) (*env, error) {
	dir := filepath.Join(tmp, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bin, exe, img := filepath.Join(dir, "attestd"), filepath.Join(dir, "runner"), filepath.Join(dir, "image.json")
	for p, c := range map[string]string{bin: "daemon bytes", exe: "runner bytes", img: `{"name":"test"}`} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return nil, err
		}
	}
	raw := []byte("register: " + strconv.Itoa(pcr) + "\nimage_metadata: " + img + "\nexecutors: [" + exe + "]\n")
	cfg, err := agent.ParseConfig(filepath.Join(dir, "config.yaml"), raw)
	if err != nil {
		return nil, err
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, RuntimeDir: filepath.Join(dir, "run"), BinaryPath: bin,
		Cmdline: "console=ttyS0 roothash=" + fixtureRootHash, Storage: storage, Version: "test",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	if err := a.Launch(ctx); err != nil {
		return nil, err
	}
	if _, err := a.Attest(ctx, attestNonce); err != nil {
		return nil, err
	}
	if _, err := a.BindBuild(ctx, buildID, testRequest, dispNonce); err != nil {
		return nil, err
	}
	if _, err := a.Complete(ctx, buildID, testInputs, testOutputs, nil); err != nil {
		return nil, err
	}
	prov := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + strings.Repeat("3", 64) +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`
	if _, err := a.SignStatement(ctx, buildID, []byte(prov)); err != nil {
		return nil, err
	}
	bundle := a.Bundle()
	e := &env{backend: v.Backend(), bundle: bundle.Envelopes, log: bundle.EventLog, signer: b.Signer(), verifier: v, buildID: buildID, register: b.Register().String()}
	e.opts = opts
	e.opts.Verifiers = []attest.Verifier{v}
	e.opts.Nonces = map[attest.Purpose][]byte{attest.PurposeAttest: attestNonce, attest.PurposeDispatch: dispNonce}
	e.opts.BuildID = buildID
	// The agent register's launch value, for reference values.
	_, recs := a.EventLog()
	prefix, ok := measure.LaunchPrefix(recs)
	if !ok {
		return nil, errorString("no launch prefix")
	}
	bank := crypto.SHA256
	if b.Register().Kind == measure.RTMR {
		bank = crypto.SHA384
	}
	if _, err := measure.Replay(prefix, bank, b.Register().Kind, b.Register().Index); err != nil {
		return nil, err
	}
	for _, r := range prefix {
		if r.Type != measure.EventStorage {
			e.launchEvents = append(e.launchEvents, measure.Event{Type: r.Type, Data: r.Data})
		}
	}
	val, err := measure.PredictRegister(bank, e.launchEvents)
	if err != nil {
		return nil, err
	}
	e.launch = hex.EncodeToString(val)
	return e, nil
}

// bakeKey signs reference values in tests.
var bakeKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)

// TestFixturesVerify: every good bundle passes, alone and under a policy.
func TestFixturesVerify(t *testing.T) {
	f := getFixtures(t)
	all := []*env{f.tpm, f.tpmOther, f.tpmSameKey, f.snp, f.snpOther, f.tdx, f.tdxOther}
	for _, e := range f.storage {
		all = append(all, e)
	}
	for _, e := range all {
		rep := verify.BundleReport(e.raw(), e.opts)
		if !rep.OK {
			logReport(t, rep)
			t.Fatalf("%s bundle not verified: %v", e.backend, rep.Failed())
		}
		if len(rep.Results) != 5 {
			t.Errorf("%s bundle has %d attestations, want 5", e.backend, len(rep.Results))
		}
	}
	_ = scai.PredicateType
}

func logReport(t testing.TB, rep *verify.Report) {
	t.Helper()
	for _, r := range rep.Results {
		for _, c := range r.Checks {
			if c.Failed() {
				t.Logf("  %s %s: %s", r.Purpose, c.Name, c.Detail)
			}
		}
	}
	for _, c := range rep.Chain {
		if !c.OK {
			t.Logf("  chain %s: %s", c.Name, c.Detail)
		}
	}
}
