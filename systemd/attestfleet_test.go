package systemd_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// stageFleetRoot is a throwaway root with the host's units, attestfleet's
// unit and a stub binary.
func stageFleetRoot(t *testing.T) string {
	t.Helper()
	root, units := stageHostUnits(t)
	copyFile(t, "attestfleet.service", filepath.Join(units, "attestfleet.service"), 0o644)
	writeFile(t, filepath.Join(root, "usr/bin/attestfleet"), "#!/bin/sh\n", 0o755)
	return root
}

func TestFleetUnitVerifies(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	cmd := exec.Command(sa, "verify", "--root="+stageFleetRoot(t), "attestfleet.service")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	// verify exits 0 on unknown keys and bad values; any output is a finding.
	if err := cmd.Run(); err != nil || strings.TrimSpace(out.String()) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out.String())
	}
}

func TestFleetUnitSecurityExposure(t *testing.T) {
	sa := needTool(t, "systemd-analyze")
	out, err := exec.Command(sa, "security", "--offline=true", "--root="+stageFleetRoot(t), "--no-pager", "attestfleet.service").CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for attestfleet\.service: ([0-9.]+) (\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security attestfleet.service: exposure %.1f %s", score, m[2])
	if score > maxExposure {
		t.Errorf("exposure %.1f %s, want ≤ %.1f:\n%s", score, m[2], maxExposure, out)
	}
}
