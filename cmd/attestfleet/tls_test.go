package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
)

// issue makes a P-256 certificate for name signed by parent (self-signed
// CA when parent is nil) and returns it with its key.
func issue(t *testing.T, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames:    []string{name},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func writePEM(t *testing.T, path string, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	write(t, path, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})))
	if key != nil {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(t, path+".key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	}
}

// TestServeMutualTLS: with tls.client_ca, a client with a certificate of
// that CA is served, one without is not.
func TestServeMutualTLS(t *testing.T) {
	ca, caKey := issue(t, "fleet-ca", nil, nil)
	server, serverKey := issue(t, "localhost", ca, caKey)
	client, clientKey := issue(t, "control-plane", ca, caKey)
	dir, config := setup(t, "tls:\n  cert: server.pem\n  key: server.pem.key\n  client_ca: ca.pem\n")
	writePEM(t, filepath.Join(dir, "ca.pem"), ca, nil)
	writePEM(t, filepath.Join(dir, "server.pem"), server, serverKey)

	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	c := &cli{stdout: io.Discard, stderr: io.Discard, ready: func(_, _ string) { close(ready) }}
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, []string{"serve", "--config", config}) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	dial := func(certs []tls.Certificate) error {
		creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: certs, MinVersion: tls.VersionTLS13})
		fc, err := fleetv1.Dial("unix:"+filepath.Join(dir, "fleet.sock"), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer fc.Close()
		_, err = fc.Challenge(ctx, &fleetv1.ChallengeRequest{Step: fleetv1.Step_STEP_ADMIT})
		return err
	}
	if err := dial([]tls.Certificate{{Certificate: [][]byte{client.Raw}, PrivateKey: clientKey}}); err != nil {
		t.Fatalf("a client with a certificate of the client CA: %v", err)
	}
	if err := dial(nil); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	// The client commands' TLS flags.
	writePEM(t, filepath.Join(dir, "client.pem"), client, clientKey)
	tlsFlags := []string{"--server", "unix:" + filepath.Join(dir, "fleet.sock"), "--tls-ca", filepath.Join(dir, "ca.pem"), "--tls-server-name", "localhost"}
	if code, out, errs := fleetCmd(t, append([]string{"challenge", "--tls-cert", filepath.Join(dir, "client.pem"), "--tls-key", filepath.Join(dir, "client.pem.key")}, tlsFlags...)...); code != 0 || len(out) != 65 {
		t.Errorf("challenge with a client certificate: exit %d: %q %s", code, out, errs)
	}
	if code, _, errs := fleetCmd(t, append([]string{"challenge"}, tlsFlags...)...); code != 1 {
		t.Errorf("challenge without a client certificate: exit %d (%s), want 1", code, errs)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve after cancel: %v", err)
	}
}
