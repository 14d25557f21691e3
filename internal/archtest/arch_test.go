// Package archtest keeps the import direction of DESIGN.md and keeps test
// helpers and fakes out of the binaries.
package archtest

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/attestd/attestd"

// deps lists the non-test dependencies of pkg.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", module+"/"+pkg).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list %s: %v\n%s", pkg, err, ee.Stderr)
		}
		t.Fatalf("go list %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// testOnly are packages that must never be linked into non-test code.
var testOnly = []string{
	module + "/attest/attesttest",
	module + "/internal/swtpmtest",
	module + "/internal/tpmfault",
	module + "/internal/bench",
	module + "/internal/petest",
	module + "/internal/pgtest",
	module + "/fleet/storetest",
	module + "/fleet/fleettest",
	module + "/internal/fleetload",
	module + "/internal/registrytest",
	module + "/attest/snp/snptest",
	module + "/attest/tdx/tdxtest",
	"github.com/google/go-sev-guest/testing",
	"github.com/google/go-tdx-guest/testing",
}

func TestImportDirection(t *testing.T) {
	for _, tc := range []struct {
		pkg       string
		forbidden []string // prefixes
	}{
		{"measure", []string{module + "/"}},
		{"attest", []string{module + "/scai", module + "/agent", module + "/verify", module + "/cmd", module + "/attest/tpm", module + "/attest/snp", module + "/attest/tdx"}},
		{"attest/tpm", []string{module + "/scai", module + "/agent", module + "/verify", module + "/cmd"}},
		{"scai", []string{module + "/agent", module + "/verify", module + "/cmd", module + "/attest/tpm", module + "/attest/snp", module + "/attest/tdx"}},
		{"agent", []string{module + "/attest/tpm", module + "/attest/snp", module + "/attest/tdx", module + "/verify", module + "/cmd", "github.com/google/go-tpm-tools/simulator"}},
		{"verify", []string{module + "/agent", module + "/cmd", module + "/attest/tpm", module + "/attest/snp", module + "/attest/tdx"}},
		{"verifier", []string{module + "/agent", module + "/cmd", "github.com/google/go-tpm-tools/simulator"}},
		{"agent/api/v1", []string{module + "/"}},
		// The fleet service: verifier, verify and below, its store
		// interface, grpc, prometheus; never its stores (they import it) and
		// the backends only through verifier (TestFleetImports).
		{"fleet", []string{module + "/agent", module + "/cmd", module + "/distribute", module + "/fleet/sqlite", module + "/fleet/postgres", "github.com/google/go-tpm-tools/simulator"}},
		{"fleet/api/v1", []string{module + "/"}},
		// Distribution: Sigstore bundles and OCI referrers over verify and
		// below; never the daemon or the fleet service.
		{"distribute", []string{module + "/agent", module + "/cmd", module + "/fleet", "github.com/google/go-tpm-tools/simulator"}},
		{"distribute/oci", []string{module + "/agent", module + "/cmd", module + "/fleet", "github.com/google/go-tpm-tools/simulator"}},
		// The daemons' shared command-line scaffolding: cobra, slog and the
		// journal; none of what the daemons run.
		{"internal/cmdline", []string{module + "/agent", module + "/cmd", module + "/fleet", module + "/verify", module + "/distribute", module + "/attest"}},
	} {
		t.Run(tc.pkg, func(t *testing.T) {
			for _, d := range deps(t, tc.pkg) {
				if d == module+"/"+tc.pkg || strings.HasPrefix(d, module+"/"+tc.pkg+"/") && strings.HasSuffix(tc.pkg, "/api/v1") {
					continue
				}
				for _, f := range tc.forbidden {
					if d == strings.TrimSuffix(f, "/") || strings.HasPrefix(d, f) {
						t.Errorf("%s imports %s, against the import direction of DESIGN.md", tc.pkg, d)
					}
				}
			}
		})
	}
}

// TestFleetImports: the fleet service reaches the evidence backends only
// through package verifier, never by importing one itself.
func TestFleetImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, module+"/fleet").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		if strings.HasPrefix(d, module+"/attest/") || strings.HasPrefix(d, "github.com/google/go-tpm") {
			t.Errorf("fleet imports %s; the backends are verifier's to use", d)
		}
	}
}

// TestMeasureIsPure checks measure's own imports (its dependencies'
// dependencies are theirs): the standard library and go-eventlog only.
func TestMeasureIsPure(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{join .Imports "\n"}}`, module+"/measure").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, d := range strings.Fields(string(out)) {
		if !strings.Contains(strings.SplitN(d, "/", 2)[0], ".") || strings.HasPrefix(d, "github.com/google/go-eventlog/") {
			continue
		}
		t.Errorf("measure imports %s; it may use only the standard library and go-eventlog", d)
	}
}

func TestBinariesLinkNoTestCode(t *testing.T) {
	for _, bin := range []string{"cmd/attestd", "cmd/attestctl", "cmd/attestfleet"} {
		t.Run(bin, func(t *testing.T) {
			for _, d := range deps(t, bin) {
				for _, f := range testOnly {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s links test-only package %s", bin, d)
					}
				}
				if strings.HasSuffix(d, "/fake") || strings.Contains(d, "/fakes") {
					t.Errorf("%s links fake package %s", bin, d)
				}
			}
		})
	}
}
