package main

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// maxInputSize bounds files attestctl reads.
const maxInputSize = 64 << 20

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func (e *env) verify(args []string) error {
	fs := e.newFlagSet("verify")
	nonceHex := fs.String("nonce", "", "expected nonce (hex)")
	var trustAK, akRoots multiFlag
	fs.Var(&trustAK, "trust-ak", "PEM public key of a trusted attestation key (repeatable)")
	fs.Var(&akRoots, "ak-roots", "PEM certificates anchoring AK certificates (repeatable)")
	insecure := fs.Bool("insecure-trust-embedded-ak", false, "UNSAFE: trust the AK shipped inside the evidence (demos only)")
	asJSON := fs.Bool("json", false, "print results as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: verify takes exactly one FILE", errUsage)
	}
	opts := verify.Options{
		InsecureTrustEmbeddedAK: *insecure,
		Verifiers:               []attest.Verifier{tpm.Verifier{}},
	}
	if *nonceHex != "" {
		n, err := parseNonce(*nonceHex)
		if err != nil {
			return err
		}
		opts.Nonce = n
	}
	for _, f := range trustAK {
		k, err := readPublicKey(f)
		if err != nil {
			return fmt.Errorf("%w: --trust-ak: %v", errUsage, err)
		}
		opts.TrustedAKs = append(opts.TrustedAKs, k)
	}
	if len(akRoots) > 0 {
		opts.AKRoots = x509.NewCertPool()
		for _, f := range akRoots {
			b, err := readInput(f)
			if err != nil {
				return fmt.Errorf("%w: --ak-roots: %v", errUsage, err)
			}
			if !opts.AKRoots.AppendCertsFromPEM(b) {
				return fmt.Errorf("%w: --ak-roots %s: no PEM certificates", errUsage, f)
			}
		}
	}
	if *insecure && !*asJSON {
		fmt.Fprintln(e.stderr, "WARNING: --insecure-trust-embedded-ak: the attestation key is taken from the evidence itself; this proves nothing about the machine. Demo use only.")
	}
	raw, err := readInput(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	results := verify.Bundle(raw, opts)
	ok := true
	for _, r := range results {
		ok = ok && r.OK
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(map[string]any{"verified": ok, "attestations": results}); err != nil {
			return err
		}
	} else {
		e.printResults(results)
	}
	if !ok {
		var failed []string
		for _, r := range results {
			failed = append(failed, r.Failed()...)
		}
		return fmt.Errorf("%w: failed checks: %s", errFailed, strings.Join(failed, ", "))
	}
	if !*asJSON {
		fmt.Fprintln(e.stdout, "VERIFIED")
	}
	return nil
}

func (e *env) printResults(results []*verify.Result) {
	for i, r := range results {
		if len(results) > 1 {
			fmt.Fprintf(e.stdout, "attestation %d of %d\n", i+1, len(results))
		}
		if r.Purpose != "" {
			fmt.Fprintf(e.stdout, "purpose: %s   env key sha256: %s\n", r.Purpose, r.KeyDigest)
		}
		tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
		for _, c := range r.Checks {
			res := "ok"
			switch {
			case c.Skip:
				res = "skipped"
			case !c.OK:
				res = "FAILED"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, res, c.Detail)
		}
		tw.Flush()
		fmt.Fprintln(e.stdout)
	}
}

func (e *env) exportAK(args []string) error {
	fs := e.newFlagSet("export-ak")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: export-ak takes exactly one FILE", errUsage)
	}
	raw, err := readInput(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	envs, err := scai.ParseBundle(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	op, err := scai.Open(envs[0])
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	for _, ev := range op.Attestation.Evidence {
		if ev.Backend != "tpm" {
			continue
		}
		pub, err := tpm.AKPublic(ev)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return err
		}
		fmt.Fprintln(e.stderr, "NOTE: an AK read from an attestation is only as trustworthy as the channel it came by; pin it from a boot you trust (docs/verifying.md).")
		return pem.Encode(e.stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	return fmt.Errorf("%w: no TPM evidence in %s", errUsage, fs.Arg(0))
}

func readInput(path string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxInputSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxInputSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxInputSize)
	}
	return b, nil
}

func readPublicKey(path string) (crypto.PublicKey, error) {
	b, err := readInput(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("%s: want a PEM \"PUBLIC KEY\" block", path)
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}
