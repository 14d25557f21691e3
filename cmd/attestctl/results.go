package main

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"time"

	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/verify"
)

// verifierID names attestctl in the verification results it signs.
const verifierID = "https://attestd.dev/attestctl"

// version is attestctl's version, set at link time (-X main.version=…).
var version = "devel"

func (e *env) clock() time.Time {
	if e.now != nil {
		return e.now()
	}
	return time.Now()
}

// writeResults signs one verification result per bundle (verify.
// ResultStatement: a VSA or an SVR) and writes them, one per line in form (a
// DSSE envelope or a Sigstore bundle), to out. Failed bundles get one too (a
// FAILED VSA, an SVR without properties).
func (e *env) writeResults(ev *verify.Evaluation, res *verify.Resolved, key crypto.Signer, form *format, out, policyURI string, now time.Time) error {
	o := verify.ResultOptions{VerifierID: verifierID, Version: version, PolicyURI: policyURI, Time: now}
	if res != nil && res.Reference != nil {
		o.Inputs = append(o.Inputs, &ita.ResourceDescriptor{Digest: map[string]string{"sha256": hex.EncodeToString(res.ReferenceSHA256[:])}})
	}
	var buf bytes.Buffer
	for _, b := range ev.Bundles {
		_, st, err := verify.ResultStatement(ev, b, o)
		if err != nil {
			fmt.Fprintf(e.stderr, "attestctl: no verification result for %s: %v\n", b.Name, err)
			continue
		}
		env, err := verify.SignResult(context.Background(), key, st)
		if err != nil {
			return err
		}
		buf.Write(env)
		buf.WriteByte('\n')
	}
	results, err := form.encode(buf.Bytes(), key.Public())
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, results, 0o644); err != nil {
		return fmt.Errorf("%w: --result-out: %v", errUsage, err)
	}
	return nil
}

// maxDataPolicy bounds the policy a default --policy-uri carries.
const maxDataPolicy = 8 << 10

// policyURI is --policy-uri, or a data: URI holding the policy evaluated
// (doc) when it is small enough to travel inside the results.
func (f *verifyFlags) policyURI(doc []byte) (string, error) {
	if *f.policyURIFlag != "" {
		return *f.policyURIFlag, nil
	}
	if len(doc) > maxDataPolicy {
		return "", fmt.Errorf("%w: the policy is %d bytes, too large to travel in the results as a data: URI: give --policy-uri", errUsage, len(doc))
	}
	return "data:application/yaml;base64," + base64.StdEncoding.EncodeToString(doc), nil
}

// readPrivateKey reads an ECDSA P-256 private key (PEM "EC PRIVATE KEY" or
// "PRIVATE KEY").
func readPrivateKey(path string) (crypto.Signer, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, err
	}
	k, err := verify.ParsePEMPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
