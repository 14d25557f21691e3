package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm-tools/simulator"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
)

// startAgent serves an agent on the simulator and returns its socket.
func startAgent(t *testing.T) string {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatal(err)
	}
	b, err := tpm.New(sim, tpm.Config{})
	if err != nil {
		sim.Close()
		t.Fatal(err)
	}
	return startAgentOn(t, b)
}

// startAgentOn serves an agent on backend b and returns its socket.
func startAgentOn(t *testing.T, b *tpm.Backend) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := agent.ParseConfig(filepath.Join(dir, "c.yaml"), []byte("executors: [/bin/sh]\n"))
	if err != nil {
		t.Fatal(err)
	}
	exe, _ := os.Executable()
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, RuntimeDir: filepath.Join(dir, "run"), BinaryPath: exe,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := agent.Listen(filepath.Join(dir, "run"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done; b.Close() })
	return agent.SocketPath(filepath.Join(dir, "run"))
}

func ctl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLI(t *testing.T) {
	sock := startAgent(t)
	dir := t.TempDir()
	launch := filepath.Join(dir, "launch.intoto.jsonl")
	att := filepath.Join(dir, "att.intoto.jsonl")
	nonce := strings.Repeat("ab", 32)

	if code, out, errs := ctl(t, "--socket", sock, "identity", "--out", launch); code != 0 || !strings.Contains(out, "PCR13") {
		t.Fatalf("identity: %d %s %s", code, out, errs)
	}
	if code, out, _ := ctl(t, "--socket", sock, "identity", "--pem"); code != 0 || !strings.HasPrefix(out, "-----BEGIN PUBLIC KEY-----") {
		t.Fatalf("identity --pem: %d %s", code, out)
	}
	if code, out, _ := ctl(t, "--socket", sock, "log"); code != 0 || !strings.Contains(out, "separator") {
		t.Fatalf("log: %d %s", code, out)
	}
	if code, _, errs := ctl(t, "--socket", sock, "attest", "--nonce", nonce, "--out", att); code != 0 {
		t.Fatalf("attest: %d %s", code, errs)
	}
	code, akPEM, errs := ctl(t, "export-ak", launch)
	if code != 0 {
		t.Fatalf("export-ak: %d %s", code, errs)
	}
	ak := filepath.Join(dir, "ak.pem")
	os.WriteFile(ak, []byte(akPEM), 0o644)

	t.Run("verified", func(t *testing.T) {
		code, out, errs := ctl(t, "verify", "--nonce", nonce, "--trust-ak", ak, att)
		if code != 0 || !strings.Contains(out, "VERIFIED") {
			t.Fatalf("verify: %d\n%s\n%s", code, out, errs)
		}
		code, out, _ = ctl(t, "verify", "--json", "--nonce", nonce, "--trust-ak", ak, att)
		var res struct {
			Verified bool `json:"verified"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !res.Verified {
			t.Fatalf("verify --json: %d %s", code, out)
		}
	})
	t.Run("launch attestation file verifies", func(t *testing.T) {
		// identity --out writes the launch attestation with the event log it
		// names: a bundle that verifies on its own.
		code, out, errs := ctl(t, "verify", "--trust-ak", ak, launch)
		if code != 0 || !strings.Contains(out, "VERIFIED") {
			t.Fatalf("verify %s: %d\n%s\n%s", launch, code, out, errs)
		}
	})
	t.Run("insecure flag warns", func(t *testing.T) {
		code, _, errs := ctl(t, "verify", "--nonce", nonce, "--insecure-trust-embedded-ak", att)
		if code != 0 || !strings.Contains(errs, "WARNING") {
			t.Fatalf("insecure: %d %s", code, errs)
		}
	})
	t.Run("not verified", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			args  []string
			check string
		}{
			{"wrong nonce", []string{"--nonce", strings.Repeat("cd", 32), "--trust-ak", ak}, "nonce"},
			{"untrusted AK", []string{"--nonce", nonce}, "ak-trusted"},
		} {
			code, out, errs := ctl(t, append(append([]string{"verify"}, tc.args...), att)...)
			if code != 1 || !strings.Contains(errs, tc.check) || !strings.Contains(out, "FAILED") {
				t.Errorf("%s: exit %d, stderr %q", tc.name, code, errs)
			}
		}
	})
	t.Run("usage", func(t *testing.T) {
		for _, args := range [][]string{
			{"verify"},
			{"verify", filepath.Join(dir, "missing.json")},
			{"verify", "--nonce", "zz", att},
			{"attest"},
			{"attest", "--nonce", strings.Repeat("00", 65)},
			{"frobnicate"},
			{"--socket", filepath.Join(dir, "none.sock"), "identity"},
		} {
			if code, _, _ := ctl(t, args...); code != 2 && !(args[0] == "--socket" && code == 1) {
				t.Errorf("%v: exit %d, want 2", args, code)
			}
		}
	})
	t.Run("unreachable daemon says so", func(t *testing.T) {
		code, _, errs := ctl(t, "--socket", filepath.Join(dir, "none.sock"), "identity")
		if code != 1 || !strings.Contains(errs, "not reachable") {
			t.Errorf("exit %d, %q", code, errs)
		}
	})
	t.Run("tampered", func(t *testing.T) { tamperCases(t, att, nonce, ak) })
}

// tamperCases changes the attestation file (the envelope line and the
// event log carrier line after it) in many ways; every change must end in
// exit 1 with a named failed check.
func tamperCases(t *testing.T, att, nonce, ak string) {
	raw, err := os.ReadFile(att)
	if err != nil {
		t.Fatal(err)
	}
	envLine, logLine, ok := bytes.Cut(bytes.TrimSpace(raw), []byte("\n"))
	if !ok || bytes.Contains(logLine, []byte("\n")) {
		t.Fatalf("attest --out wrote %d lines; want the envelope and the event log", bytes.Count(raw, []byte("\n")))
	}
	var env struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
		Signatures  []struct {
			KeyID string `json:"keyid"`
			Sig   string `json:"sig"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(envLine, &env); err != nil {
		t.Fatal(err)
	}
	var carrier struct {
		PayloadType string `json:"payloadType"`
		Payload     []byte `json:"payload"`
	}
	if err := json.Unmarshal(logLine, &carrier); err != nil || carrier.PayloadType != scai.PayloadTypeCEL {
		t.Fatalf("second line is not the event log carrier (%v): %.100s", err, logLine)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	dir := t.TempDir()
	check := func(name string, b []byte) {
		t.Helper()
		p := filepath.Join(dir, "t.json")
		os.WriteFile(p, b, 0o644)
		code, out, errs := ctl(t, "verify", "--nonce", nonce, "--trust-ak", ak, p)
		if code != 1 || !strings.Contains(errs, "failed checks") {
			t.Errorf("%s: exit %d (want 1)\n%s%s", name, code, out, errs)
		}
	}
	// reenc changes the envelope and keeps the event log.
	reenc := func(mut func(e map[string]any)) []byte {
		var e map[string]any
		json.Unmarshal(envLine, &e)
		mut(e)
		b, _ := json.Marshal(e)
		return scai.EncodeBundle(b, logLine)
	}
	check("payloadType", reenc(func(e map[string]any) { e["payloadType"] = "application/json" }))
	check("no signatures", reenc(func(e map[string]any) { e["signatures"] = []any{} }))
	sig, _ := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	sig[len(sig)/2] ^= 1
	check("signature byte", reenc(func(e map[string]any) {
		e["signatures"].([]any)[0].(map[string]any)["sig"] = base64.StdEncoding.EncodeToString(sig)
	}))
	// Flip bytes across the signed payload: each one breaks the signature.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 40; i++ {
		p := bytes.Clone(payload)
		p[rng.IntN(len(p))] ^= byte(1 + rng.IntN(255))
		check("payload byte", reenc(func(e map[string]any) { e["payload"] = base64.StdEncoding.EncodeToString(p) }))
	}
	// The event log: missing, cut short, or changed anywhere, it no longer
	// matches what the signed statement names.
	check("no event log", scai.EncodeBundle(envLine))
	check("event log cut short", scai.EncodeBundle(envLine, scai.Carrier(scai.PayloadTypeCEL, carrier.Payload[:len(carrier.Payload)-1])))
	for i := 0; i < 20; i++ {
		l := bytes.Clone(carrier.Payload)
		l[rng.IntN(len(l))] ^= byte(1 + rng.IntN(255))
		check("event log byte", scai.EncodeBundle(envLine, scai.Carrier(scai.PayloadTypeCEL, l)))
	}
	// Raw bytes of the file itself.
	for i := 0; i < 40; i++ {
		b := bytes.Clone(raw)
		j := rng.IntN(len(b) - 1)
		b[j] ^= byte(1 + rng.IntN(255))
		check("file byte", b)
	}
	check("truncated", raw[:len(raw)/2])
	check("empty", nil)
}
