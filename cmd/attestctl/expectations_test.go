package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// e2eDir holds a real bundle of a measured boot under QEMU + OVMF + swtpm,
// its signed reference values, the bake key and the pinned AK
// (verify/testdata/e2e).
var e2eDir = filepath.Join("..", "..", "verify", "testdata", "e2e")

// e2eBundle is the e2e bundle split into its lines, each attestation by
// purpose, with the nonces it carries.
type e2eBundle struct {
	lines   map[attest.Purpose][]byte // attestd attestations
	signed  []byte                    // the provenance the env key signed
	carrier [][]byte                  // event logs, proofs
	nonces  map[attest.Purpose]string
	buildID string
}

func readE2EBundle(t *testing.T) *e2eBundle {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e2eDir, "bundle.intoto.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	b := &e2eBundle{lines: map[attest.Purpose][]byte{}, nonces: map[attest.Purpose]string{}}
	for _, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		d, err := scai.DecodeBundle(line)
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Envelopes) == 0 {
			b.carrier = append(b.carrier, line)
			continue
		}
		op, err := scai.Open(d.Envelopes[0])
		if errors.Is(err, scai.ErrPredicateType) {
			b.signed = line
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		a := op.Attestation
		b.lines[a.Purpose] = line
		if a.Nonce != nil {
			b.nonces[a.Purpose] = hex.EncodeToString(a.Nonce)
		}
		if a.Build != nil {
			b.buildID = a.Build.ID
		}
	}
	for _, p := range []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete} {
		if b.lines[p] == nil {
			t.Fatalf("the e2e bundle has no %s attestation", p)
		}
	}
	return b
}

// with writes a bundle of the given attestations (and the provenance when
// signed) with the event logs, and returns its path.
func (b *e2eBundle) with(t *testing.T, signed bool, ps ...attest.Purpose) string {
	t.Helper()
	var out [][]byte
	for _, p := range ps {
		out = append(out, b.lines[p])
	}
	if signed {
		out = append(out, b.signed)
	}
	out = append(out, b.carrier...)
	name := "bundle"
	for _, p := range ps {
		name += "-" + string(p)
	}
	path := filepath.Join(t.TempDir(), name+".intoto.jsonl")
	if err := os.WriteFile(path, append(bytes.Join(out, []byte("\n")), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// expectation is one thing a verifier can state: by flags (nil when only a
// policy can state it) and by policy, with the attestations it refers to.
type expectation struct {
	name   string
	flags  func(b *e2eBundle) []string
	policy func(b *e2eBundle) string // YAML after "version: 1"
	needs  []attest.Purpose          // nil: any attestd attestation
}

func expectations() []expectation {
	ref := func(b *e2eBundle) []string {
		return []string{"--reference", filepath.Join(e2eDir, "reference.intoto.json"), "--reference-key", filepath.Join(e2eDir, "bake-key.pub.pem")}
	}
	refPolicy := func(*e2eBundle) string {
		abs, _ := filepath.Abs(e2eDir)
		return fmt.Sprintf("reference: {file: %s, keys: [%s]}\n", filepath.Join(abs, "reference.intoto.json"), filepath.Join(abs, "bake-key.pub.pem"))
	}
	nonce := func(p attest.Purpose) expectation {
		return expectation{
			name:   "nonce for " + string(p),
			flags:  func(b *e2eBundle) []string { return []string{"--nonce", string(p) + "=" + b.nonces[p]} },
			policy: func(b *e2eBundle) string { return fmt.Sprintf("freshness: {nonces: {%s: %q}}\n", p, b.nonces[p]) },
			needs:  []attest.Purpose{p},
		}
	}
	return []expectation{
		nonce(attest.PurposeAttest),
		nonce(attest.PurposeDispatch),
		{
			name:   "build ID",
			flags:  func(b *e2eBundle) []string { return []string{"--build-id", b.buildID} },
			policy: func(b *e2eBundle) string { return fmt.Sprintf("build: {id: %q}\n", b.buildID) },
			needs:  []attest.Purpose{attest.PurposeDispatch},
		},
		{name: "reference values", flags: ref, policy: refPolicy},
		{
			name:   "build request",
			policy: func(*e2eBundle) string { return "build: {request: [{name: source}]}\n" },
			needs:  []attest.Purpose{attest.PurposeDispatch},
		},
		{
			name:   "purposes",
			policy: func(*e2eBundle) string { return "require: {purposes: [launch, complete]}\n" },
			needs:  []attest.Purpose{attest.PurposeLaunch, attest.PurposeComplete},
		},
		{
			name:   "level 2",
			policy: func(b *e2eBundle) string { return refPolicy(b) + "require: {level: 2}\n" },
			needs:  []attest.Purpose{attest.PurposeLaunch, attest.PurposeDispatch},
		},
		{name: "registers", policy: func(*e2eBundle) string { return "require: {registers: [PCR0, PCR13]}\n" }},
		{name: "backends", policy: func(*e2eBundle) string { return "require: {backends: [tpm]}\n" }},
		{name: "attributes", policy: func(*e2eBundle) string { return "require: {attributes: [attestd.dev/agent]}\n" }},
		{name: "storage", policy: func(*e2eBundle) string { return "storage: {encrypted_writable: true}\n" }},
	}
}

// verifyExit runs attestctl verify with the AK pinned and returns its exit
// code and output.
func verifyExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"verify", "--trust-ak", filepath.Join(e2eDir, "ak.pem")}, args...)
	code := run(context.Background(), all, &out, &errOut)
	return code, out.String() + errOut.String()
}

func writePolicy(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("version: 1\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestExpectationsEnforced is the false-accept family: for every expectation
// a verifier can state, by flags and by policy alike, a bundle lacking the
// attestation it refers to fails (exit 1), the same bundle without the
// expectation passes, and the whole bundle passes with it.
func TestExpectationsEnforced(t *testing.T) {
	b := readE2EBundle(t)
	lacking := [][]attest.Purpose{
		{attest.PurposeLaunch},
		{attest.PurposeLaunch, attest.PurposeAttest},
		{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch},
		{attest.PurposeLaunch, attest.PurposeDispatch, attest.PurposeComplete},
	}
	full := b.with(t, true, attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete)
	provenanceOnly := b.with(t, true)
	for _, ex := range expectations() {
		t.Run(ex.name, func(t *testing.T) {
			modes := map[string][]string{"policy": {"--policy", writePolicy(t, ex.policy(b))}}
			if ex.flags != nil {
				modes["flags"] = ex.flags(b)
			}
			for mode, args := range modes {
				if code, out := verifyExit(t, append(slices.Clone(args), full)...); code != 0 {
					t.Errorf("%s: the whole bundle: exit %d, want 0\n%s", mode, code, out)
				}
				if code, out := verifyExit(t, append(slices.Clone(args), provenanceOnly)...); code != 1 {
					t.Errorf("%s: a bundle with no attestd attestation: exit %d, want 1\n%s", mode, code, out)
				}
				for _, ps := range lacking {
					missing := ex.needs != nil && slices.ContainsFunc(ex.needs, func(p attest.Purpose) bool { return !slices.Contains(ps, p) })
					if !missing {
						continue
					}
					path := b.with(t, false, ps...)
					if code, out := verifyExit(t, path); code != 0 {
						t.Fatalf("%v without the expectation: exit %d, want 0\n%s", ps, code, out)
					}
					if code, out := verifyExit(t, append(slices.Clone(args), path)...); code != 1 {
						t.Errorf("%s: a bundle of %v (no %v): exit %d, want 1\n%s", mode, ps, ex.needs, code, out)
					} else if !strings.Contains(out, "FAILED") {
						t.Errorf("%s: %v: exit 1 without a FAILED check\n%s", mode, ps, out)
					}
				}
			}
		})
	}
}
