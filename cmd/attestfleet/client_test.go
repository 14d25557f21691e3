package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm-tools/simulator"
	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/fleet/fleettest"
	"github.com/attestd/attestd/fleet/sqlite"
	"github.com/attestd/attestd/verifier"
)

type nopCloser struct{ io.ReadWriter }

func (nopCloser) Close() error { return nil }

// simAgent is a launched agent on the in-process TPM simulator: the
// environment the client commands drive. Needs cgo (the simulator).
func simAgent(t *testing.T) *agent.Agent {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("TPM simulator: %v", err)
	}
	t.Cleanup(func() { sim.Close() })
	b, err := tpm.New(nopCloser{sim}, tpm.Config{PCR: 13, FirmwareLogPath: "/nonexistent"})
	if err != nil {
		t.Fatalf("TPM backend: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	dir := t.TempDir()
	bin, exe := filepath.Join(dir, "attestd"), filepath.Join(dir, "runner")
	for _, p := range []string{bin, exe} {
		write(t, p, "bytes of "+p)
	}
	cfg, err := agent.ParseConfig(filepath.Join(dir, "config.yaml"), []byte("executors: ["+exe+"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, RuntimeDir: filepath.Join(dir, "run"), BinaryPath: bin,
		Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	if err := a.Launch(context.Background()); err != nil {
		t.Fatalf("launch: %v", err)
	}
	return a
}

// fleetCmd runs attestfleet with args and returns its exit code, stdout and
// stderr (as main would print it).
func fleetCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := exit(run(context.Background(), args, &out, &errb), &errb)
	return code, out.String(), errb.String()
}

// TestClientCommands drives one environment (an agent on the TPM
// simulator) through a replica on SQLite with the client commands, as
// scripts/demo.sh does: challenge, admit, dispatch, confirm, completion
// challenge, complete, look-ups, the VSA checked with the result key; and
// the refusals and usage errors with their exit codes.
func TestClientCommands(t *testing.T) {
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "fleet.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := fleettest.Config(t, st)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Signer = key
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "result-key.pub.pem")
	write(t, pub, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})))
	r := fleettest.Start(t, cfg)
	server := []string{"--server", r.Addr}

	a := simAgent(t)
	ctx := context.Background()
	bundle := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, a.Bundle().Encode(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	facts, err := verifier.Inspect(a.Bundle().Encode())
	if err != nil {
		t.Fatal(err)
	}
	// The test policy trusts no AK: put this one in the store, as a
	// registration would.
	if err := st.PutAK(ctx, fleet.AK{Digest: facts.AKDigest, PublicKey: facts.AK, EKCertDigest: strings.Repeat("0", 64), RegisteredAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	ok := func(args ...string) string {
		t.Helper()
		if args[0] != "check-result" { // it calls no replica
			args = append(args, server...)
		}
		code, out, errs := fleetCmd(t, args...)
		if code != 0 {
			t.Fatalf("attestfleet %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	nonceOf := func(out string) []byte {
		t.Helper()
		n, err := hex.DecodeString(strings.TrimSpace(out))
		if err != nil || len(n) != 32 {
			t.Fatalf("a nonce line: %q", out)
		}
		return n
	}

	// Admission.
	nonce := nonceOf(ok("challenge"))
	if _, err := a.Attest(ctx, nonce); err != nil {
		t.Fatal(err)
	}
	admitted := bundle("admission.intoto.jsonl")
	svr := filepath.Join(dir, "admission.svr.json")
	var env environmentJSON
	if err := json.Unmarshal([]byte(ok("admit", "--nonce", hex.EncodeToString(nonce), "--bundle", admitted, "--out", svr, "--json")), &env); err != nil {
		t.Fatal(err)
	}
	kd := a.KeyDigest()
	if env.KeyDigest != hex.EncodeToString(kd[:]) || env.AKDigest != facts.AKDigest || env.File != svr {
		t.Fatalf("admit --json: %+v", env)
	}
	if out := ok("check-result", "--key", pub, svr); !strings.Contains(out, "ATTESTD_ADMITTED") {
		t.Fatalf("check-result of the admission SVR:\n%s", out)
	}
	if out := ok("get-env", "--env-key", env.KeyDigest); !strings.Contains(out, "env-key      "+env.KeyDigest) {
		t.Fatalf("get-env:\n%s", out)
	}

	// Dispatch.
	const build = "build-0001"
	dn := nonceOf(ok("dispatch", "--env-key", env.KeyDigest, "--build-id", build))
	req := []*ita.ResourceDescriptor{{Name: "source", Uri: "git+https://example.com/app", Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)}}}
	if _, err := a.BindBuild(ctx, build, req, dn); err != nil {
		t.Fatal(err)
	}
	if out := ok("confirm", "--build-id", build, "--bundle", bundle("dispatch.intoto.jsonl")); !strings.Contains(out, "dispatched") {
		t.Fatalf("confirm:\n%s", out)
	}

	// Completion, with a completion challenge and the signed provenance.
	cn := nonceOf(ok("challenge", "--step", "complete", "--build-id", build))
	out := []*ita.ResourceDescriptor{{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}}
	if _, err := a.Complete(ctx, build, nil, out, cn); err != nil {
		t.Fatal(err)
	}
	prov := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + strings.Repeat("3", 64) +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`
	if _, err := a.SignStatement(ctx, build, []byte(prov)); err != nil {
		t.Fatal(err)
	}
	vsa := filepath.Join(dir, "build.vsa.json")
	ok("complete", "--build-id", build, "--bundle", bundle("build.intoto.jsonl"), "--out", vsa)
	var res resultJSON
	if err := json.Unmarshal([]byte(ok("check-result", "--key", pub, "--json", vsa)), &res); err != nil {
		t.Fatal(err)
	}
	if res.VerificationResult != "PASSED" || len(res.Subjects) != 1 || !strings.HasPrefix(res.Subjects[0], "app.bin sha256:333") {
		t.Fatalf("check-result of the VSA: %+v", res)
	}
	var b buildJSON
	again := filepath.Join(dir, "again.vsa.json")
	if err := json.Unmarshal([]byte(ok("get-build", "--build-id", build, "--json", "--out", again)), &b); err != nil {
		t.Fatal(err)
	}
	if b.State != "completed" || b.EnvKey != env.KeyDigest || b.CompletedAt == "" {
		t.Fatalf("get-build --json: %+v", b)
	}
	if x, y := read(t, vsa), read(t, again); x != y {
		t.Fatal("get-build --out wrote another VSA than complete --out")
	}

	// Refusals: exit 1 with the reason.
	for _, tc := range []struct {
		args   []string
		reason string
	}{
		{[]string{"dispatch", "--env-key", env.KeyDigest, "--build-id", "build-0002"}, "ENVIRONMENT_TAKEN"},
		{[]string{"admit", "--nonce", hex.EncodeToString(nonce), "--bundle", admitted}, "NONCE_USED"},
		{[]string{"get-build", "--build-id", "nope"}, "BUILD_UNKNOWN"},
		{[]string{"confirm", "--build-id", build, "--bundle", admitted}, "WRONG_STATE"},
	} {
		code, stdout, errs := fleetCmd(t, append(tc.args, server...)...)
		if code != 1 || stdout != "" || !strings.Contains(errs, "refused: "+tc.reason+": ") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 1 and refused: %s", tc.args, code, stdout, errs, tc.reason)
		}
	}
	// A tampered result does not check.
	raw := []byte(read(t, vsa))
	raw[bytes.Index(raw, []byte(`"sig":"`))+8] ^= 1
	write(t, vsa, string(raw))
	if code, _, errs := fleetCmd(t, "check-result", "--key", pub, vsa); code != 1 {
		t.Errorf("check-result of a tampered VSA: exit %d: %s", code, errs)
	}

	// Usage errors: exit 2. An unreachable replica: exit 1.
	for _, args := range [][]string{
		{"admit", "--bundle", admitted},
		{"admit", "--nonce", "abcd", "--bundle", admitted},
		{"challenge", "--step", "dispatch"},
		{"challenge", "extra"},
		{"get-env", "--env-key", env.KeyDigest, "--tls-cert", pub},
		{"check-result", "--key", filepath.Join(dir, "nowhere.pem"), vsa},
		{"check-result", "--key", pub},
	} {
		if args[0] != "check-result" {
			args = append(args, server...)
		}
		if code, _, errs := fleetCmd(t, args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errs)
		}
	}
	if code, _, errs := fleetCmd(t, "challenge", "--server", "unix:"+filepath.Join(dir, "nobody.sock")); code != 1 || !strings.Contains(errs, "Unavailable") {
		t.Errorf("an unreachable replica: exit %d (%s), want 1 and Unavailable", code, errs)
	}
	// $ATTESTFLEET_SERVER is the default --server.
	t.Setenv(serverEnv, r.Addr)
	if code, out, errs := fleetCmd(t, "challenge", "--json"); code != 0 || !strings.Contains(out, `"nonce"`) {
		t.Errorf("challenge at $%s: exit %d: %s%s", serverEnv, code, out, errs)
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
