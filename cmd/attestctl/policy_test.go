package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A malformed policy is bad input (exit 2) naming the line and key.
func TestVerifyBadPolicyExit2(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct{ yaml, want string }{
		"unknown key":  {"version: 1\ntrust:\n  tpm:\n    pinned_ak: [x.pem]\n", "line 4: trust.tpm.pinned_ak: unknown key"},
		"missing file": {"version: 1\ntrust:\n  tpm:\n    pinned_aks: [nope.pem]\n", "line 4: trust.tpm.pinned_aks[0]:"},
		"bad level":    {"version: 1\nrequire: {level: 9}\n", "line 2: require.level"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, errs := ctl(t, "verify", "--policy", p, filepath.Join(dir, "bundle.jsonl"))
			if code != exitUsage || !strings.Contains(errs, tc.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, errs, tc.want)
			}
		})
	}
	if code, _, _ := ctl(t, "verify", "--result-key", "k.pem", filepath.Join(dir, "b")); code != exitUsage {
		t.Errorf("--result-key without --result-out: exit %d", code)
	}
}
