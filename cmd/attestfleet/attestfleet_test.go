package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/pgtest"
	"github.com/attestd/attestd/internal/yamlfile"
)

// setup writes a policy and a result key into a temp dir and returns the
// dir and a config naming them, with extra appended.
func setup(t testing.TB, extra string) (dir, config string) {
	t.Helper()
	dir = t.TempDir()
	write(t, filepath.Join(dir, "policy.yaml"), "version: 1\ntrust:\n  tpm:\n    insecure_trust_embedded_ak: true\n")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "result-key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	config = filepath.Join(dir, "config.yaml")
	write(t, config, "listen: unix:"+filepath.Join(dir, "fleet.sock")+"\nstore:\n  sqlite: fleet.db\npolicy: policy.yaml\nresults:\n  key: result-key.pem\n"+extra)
	return dir, config
}

func write(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestServe runs attestfleet serve from a config file: the API, health and
// metrics answer; cancelling stops it cleanly.
func TestServe(t *testing.T) {
	dir, config := setup(t, "metrics: 127.0.0.1:0\n")
	serveAndCheck(t, dir, config)
}

// TestServePostgres is TestServe on a private PostgreSQL cluster (Debian's
// server binaries, scripts/install-deps.sh).
func TestServePostgres(t *testing.T) {
	dsn := pgtest.Start(t).CreateDB(t, "fleet")
	dir, config := setup(t, "metrics: 127.0.0.1:0\n")
	raw, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	write(t, config, strings.Replace(string(raw), "  sqlite: fleet.db\n", "  postgres: "+strconv.Quote(dsn)+"\n", 1))
	serveAndCheck(t, dir, config)
}

func serveAndCheck(t *testing.T, dir, config string) {
	t.Helper()
	metrics := make(chan string, 1)
	ctx, cancel := context.WithCancel(context.Background())
	c := &cli{stdout: io.Discard, stderr: io.Discard, ready: func(_, m string) { metrics <- m }}
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, []string{"serve", "--config", config}) }()
	var maddr string
	select {
	case maddr = <-metrics:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	client, err := fleetv1.Dial("unix:" + filepath.Join(dir, "fleet.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ch, err := client.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
	if err != nil || len(ch.GetNonce()) != 32 {
		t.Fatalf("Challenge: %v, %v", ch, err)
	}
	waitServing(t, client)
	resp, err := http.Get("http://" + maddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{"attestfleet_store_seconds_bucket", "attestfleet_admissions_total", "attestfleet_store_up 1"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}

// waitServing waits (generously, for a loaded machine) for the first
// health ping to report SERVING.
func waitServing(t *testing.T, c *fleetv1.Client) {
	t.Helper()
	hc := healthpb.NewHealthClient(c.Conn())
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		if err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for SERVING: %v, %v", r, err)
		}
	}
}

// TestConfigErrors: each mistake in the config file is refused with its
// line and key.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		line        int
		key         string
	}{
		{"unknown key", "colour: blue\n", 7, "colour"},
		{"wrong type", "nonce_lifetime: soon\n", 7, "nonce_lifetime"},
		{"short nonce lifetime", "nonce_lifetime: 1ms\n", 7, "nonce_lifetime"},
		{"both stores", "", 3, "store"},
		{"bad listen", "", 1, "listen"},
		{"huge bundles", "limits:\n  max_bundle: 1000000000\n", 8, "limits.max_bundle"},
		{"relative verifier ID", "", 0, "results.verifier_id"},
		{"missing EK roots file", "registration:\n  ek_roots: [nowhere.pem]\n", 8, "registration.ek_roots[0]"},
		{"TLS certificate without its key", "tls:\n  cert: server.pem\n", 8, "tls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, config := setup(t, tc.extra)
			raw, err := os.ReadFile(config)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.name {
			case "both stores":
				raw = bytes.Replace(raw, []byte("  sqlite: fleet.db\n"), []byte("  sqlite: fleet.db\n  postgres: postgres:///fleet\n"), 1)
			case "bad listen":
				raw = bytes.Replace(raw, []byte("listen: unix:/"), []byte("listen: unix:"), 1)
			case "relative verifier ID":
				raw = append(raw, "  verifier_id: fleet\n"...)
				tc.line = bytes.Count(raw, []byte("\n"))
			}
			write(t, config, string(raw))
			_, err = loadConfig(config)
			var ye *yamlfile.Error
			if !errors.Is(err, errConfig) || !errors.As(err, &ye) {
				t.Fatalf("error %v, want a config error at a place", err)
			}
			if ye.Line != tc.line || ye.Key != tc.key {
				t.Errorf("error at line %d key %q, want line %d key %q: %v", ye.Line, ye.Key, tc.line, tc.key, err)
			}
		})
	}
}

// TestUsage: a command line that cannot run exits 2.
func TestUsage(t *testing.T) {
	for _, args := range [][]string{{"serve", "extra"}, {"nope"}, {"serve", "--log-level", "loud"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if exitCode(err) != 2 {
			t.Errorf("%v: exit %d (%v), want 2", args, exitCode(err), err)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, io.Discard); err != nil || out.String() != "attestfleet dev\n" {
		t.Errorf("version: %q, %v", out.String(), err)
	}
	if err := run(context.Background(), []string{"serve", "--config", "/nonexistent/config.yaml"}, io.Discard, io.Discard); exitCode(err) != 1 {
		t.Errorf("a missing config: exit %d (%v), want 1", exitCode(err), err)
	}
}
