package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/attestd/attestd/verify"
)

// verifierID names attestctl in the VSAs it signs.
const verifierID = "https://attestd.dev/attestctl"

// version is attestctl's version, set at link time (-X main.version=…).
var version = "devel"

func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

// writeVSAs signs one SLSA VSA per bundle and writes them, one DSSE
// envelope per line, to out. A VSA is written for failed bundles too
// (verificationResult FAILED).
func (e *env) writeVSAs(ev *verify.Evaluation, key crypto.Signer, out, policyFile string, now time.Time) error {
	var buf bytes.Buffer
	for _, b := range ev.Bundles {
		st, err := verify.NewVSA(ev, b, verify.VSAOptions{VerifierID: verifierID, Version: version, PolicyURI: filepath.Base(policyFile), Time: now})
		if err != nil {
			fmt.Fprintf(e.stderr, "attestctl: no VSA for %s: %v\n", b.Name, err)
			continue
		}
		env, err := verify.SignVSA(context.Background(), key, st)
		if err != nil {
			return err
		}
		buf.Write(env)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("%w: --vsa-out: %v", errUsage, err)
	}
	return nil
}

// readPrivateKey reads an ECDSA P-256 private key (PEM "EC PRIVATE KEY" or
// "PRIVATE KEY").
func readPrivateKey(path string) (crypto.Signer, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, err
	}
	k, err := parsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// parsePrivateKey parses an ECDSA P-256 private key from PEM ("EC PRIVATE
// KEY" or PKCS #8 "PRIVATE KEY").
func parsePrivateKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want EC PRIVATE KEY or PRIVATE KEY", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("want an ECDSA P-256 key")
	}
	return ek, nil
}
