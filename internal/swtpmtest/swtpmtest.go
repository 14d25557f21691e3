// Package swtpmtest starts a throw-away swtpm (software TPM 2.0) for tests,
// manufactured by swtpm_setup with an EK certificate issued by a local CA
// that lives in the test's temp directory.
//
// Test-only: it imports "testing" and must never be imported by non-test
// code.
package swtpmtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TPM is a running swtpm.
type TPM struct {
	// Socket is the unix-io server socket speaking the TPM command
	// protocol; pass "unix:"+Socket to tpm.Open.
	Socket string
	// CADir holds swtpm's local CA: issuercert.pem signed the EK
	// certificate, swtpm-localca-rootca-cert.pem is its root.
	CADir string
	// IssuerCert and RootCert are the EK certificate's issuer and root (PEM).
	IssuerCert, RootCert string
}

// Start runs swtpm_setup and swtpm in a temp directory and returns the
// server socket path; swtpm stops in t.Cleanup.
func Start(t testing.TB) (socketPath string) { return StartTPM(t).Socket }

// StartTPM is Start returning the CA paths as well. Without swtpm it fails
// the test in CI (CI must run these tests) and skips it elsewhere.
func StartTPM(t testing.TB) *TPM {
	t.Helper()
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (CI must run swtpm tests): run scripts/install-deps.sh", bin)
			}
			t.Skip("swtpm not installed; run scripts/install-deps.sh")
		}
	}
	// unix socket paths are limited to ~108 bytes: keep the directory short.
	dir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	state := filepath.Join(dir, "state")
	ca := filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	localca := filepath.Join(dir, "swtpm-localca.conf")
	setupConf := filepath.Join(dir, "swtpm_setup.conf")
	opts := filepath.Join(dir, "swtpm-localca.options")
	write(t, localca, fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
		ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")))
	write(t, opts, "--platform-manufacturer attestd\n--platform-version 2.1\n--platform-model swtpmtest\n")
	write(t, setupConf, fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
		localca, opts))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	setup := exec.CommandContext(ctx, "swtpm_setup", "--tpm2", "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", "--pcr-banks", "sha256",
		"--config", setupConf, "--overwrite")
	setup.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}

	sock := serve(t, dir, state)
	return &TPM{
		Socket:     sock,
		CADir:      ca,
		IssuerCert: filepath.Join(ca, "issuercert.pem"),
		RootCert:   filepath.Join(ca, "swtpm-localca-rootca-cert.pem"),
	}
}

// serve runs swtpm on the TPM state in state, with its sockets and log in
// dir, until tb's cleanup, and returns the server socket once it accepts.
func serve(tb testing.TB, dir, state string) string {
	tb.Helper()
	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+sock,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--tpmstate", "dir="+state,
		"--flags", "not-need-init,startup-clear")
	logf, err := os.Create(filepath.Join(dir, "swtpm.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start swtpm: %v", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); logf.Close(); close(exited) }()
	tb.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	if err := waitSocket(sock, exited, &waitErr); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
		tb.Fatalf("swtpm did not come up: %v\n%s", err, log)
	}
	return sock
}

// waitSocket waits until swtpm accepts connections on the socket. The probe
// connection is closed at once; swtpm then accepts the next one.
func waitSocket(path string, exited <-chan struct{}, waitErr *error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("swtpm exited: %v", *waitErr)
		default:
		}
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("timed out waiting for " + path)
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
