package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/tpm"
	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// maxInputSize bounds files attestctl reads.
const maxInputSize = 64 << 20

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }
func (m *multiFlag) Type() string       { return "stringArray" }

// verifyFlags are verify's flags.
type verifyFlags struct {
	nonces, trustAK, akRoots multiFlag
	buildID                  *string
	insecure, asJSON         *bool
	policyFile               *string
	resultKey, resultOut     *string
	resultFormat             *format
	policyOut, policyURIFlag *string
	tee                      *teeOptions
	refs                     *referenceFlags
	oci                      *ociFlags
}

func (e *env) verifyCmd() *cobra.Command {
	f := &verifyFlags{}
	cmd := &cobra.Command{
		Use:     "verify [flags] FILE|oci://REPO@sha256:HEX...",
		GroupID: groupOffline,
		Short:   "Verify an attestation or .intoto.jsonl bundles",
		Long: `Verify one attestation with its event log (as identity, attest, bind and complete --out
write it) or bundles (.intoto.jsonl, as bundle writes them), each bundle as a chain, and
appraise them against an appraisal policy (--policy; docs/verifying.md). Every check is
named in a table; the failed ones on stderr. Reads local files, and uses the network only for
oci://REPO@sha256:HEX: the attestations attached to that manifest in a registry (attestctl
push; --build-id narrows them; --plain-http for a registry on this machine without TLS),
checked as one bundle plus the check that they describe that manifest (docs/distributing.md).

Exit codes: 0 verified, 1 not verified, 2 bad input (including a malformed policy, reported
with its line and key).

The flags are a shorthand for policy fields, added to --policy when both are given: the
same input gets the same verdict either way, and an expectation about an attestation the
bundle lacks fails. --nonce takes HEX (the admission's nonce) or PURPOSE=HEX with PURPOSE
attest, dispatch or complete (freshness.nonces: the bundle must hold that attestation);
--build-id is the build ID dispatch and completion must carry (build.id: the bundle must
hold the dispatch); --trust-ak and --ak-roots are trust.tpm.pinned_aks and ak_roots;
--reference and --reference-key are reference.file and keys (attestctl reference); the
--snp-* and --tdx-* flags are the trust.snp and trust.tdx fields. --policy-out writes the
policy evaluated.

--result-key and --result-out write one DSSE-signed verification result per bundle: a
SLSA VSA v1 for a bundle holding a completion (subjects: the build's outputs), an in-toto
SVR v0.2 for an admission or dispatch (subject: the environment key). They name the policy
by --policy-uri and its digest (docs/verifying.md); --result-format sigstore writes each as a
Sigstore bundle v0.3 whose key hint names the --result-key.

Each FILE may hold DSSE envelopes or Sigstore bundles v0.3 (the --format sigstore of
identity, attest, bind, complete, sign, bundle), or both: sigstore-go verifies each bundle
with the key its hint must name, reported as "the bundle's form" (docs/formats.md).

--json prints {"policySha256", "bundles": [{"name", "sha256", "report", "policy",
"buildEnvLevel", "verified"}], "acrossBundles", "verified"} (docs/verifying.md) and no
VERIFIED line.`,
		Example: `  attestctl verify --nonce "$nonce" --trust-ak ak.pem attestation.intoto.jsonl
  attestctl verify --nonce attest=$ADMISSION_NONCE --nonce dispatch=$DISPATCH_NONCE \
      --build-id build-0001 --trust-ak ak.pem build.intoto.jsonl
  attestctl verify --policy policy.yaml --policy-uri https://ci.example/policy.yaml \
      --result-key result-key.pem --result-out results.intoto.jsonl bundle.intoto.jsonl`,
		Args: minArgs(1, "FILEs"),
		RunE: func(cmd *cobra.Command, files []string) error {
			return e.verify(cmd.Context(), f, files)
		},
	}
	fs := cmd.Flags()
	fs.Var(&f.nonces, "nonce", "expected nonce: `HEX` (admission) or PURPOSE=HEX for attest, dispatch, complete (repeatable)")
	f.buildID = fs.String("build-id", "", "the build `ID` dispatch and completion must carry")
	fs.Var(&f.trustAK, "trust-ak", "`PEM` public key of a trusted attestation key (repeatable)")
	fs.Var(&f.akRoots, "ak-roots", "`PEM` certificates anchoring AK certificates (repeatable)")
	f.insecure = fs.Bool("insecure-trust-embedded-ak", false, "UNSAFE: trust the AK shipped inside the evidence (demos only)")
	f.asJSON = fs.Bool("json", false, "print results as JSON")
	f.policyFile = fs.String("policy", "", "appraisal policy `FILE` (YAML; docs/policy.example.yaml)")
	f.resultKey = fs.String("result-key", "", "`PEM` private key (ECDSA P-256) signing the verification results; needs --result-out")
	f.resultOut = fs.String("result-out", "", "write one DSSE-signed result per bundle to `FILE` (JSON lines): a SLSA VSA v1 for a completed build, an in-toto SVR v0.2 for an admission or dispatch")
	f.resultFormat = newFormat(fs, "result-format", "the results (--result-out)")
	f.policyOut = fs.String("policy-out", "", "write the policy evaluated (--policy with the flags on top) to `FILE`: the document the results' policy digest names")
	f.policyURIFlag = fs.String("policy-uri", "", "`URI` where consumers of the results find the policy (default: a data: URI holding it, up to 8 KiB)")
	f.tee = teeFlags(fs)
	f.refs = newReferenceFlags(fs)
	f.oci = newOCIFlags(fs, e.stderr)
	for _, n := range []string{"trust-ak", "ak-roots", "result-key", "reference", "reference-key"} {
		cmd.MarkFlagFilename(n, "pem")
	}
	cmd.MarkFlagFilename("policy", "yaml", "yml")
	cmd.MarkFlagFilename("result-out")
	cmd.MarkFlagFilename("policy-out", "yaml")
	cmd.MarkFlagFilename("snp-vcek")
	cmd.MarkFlagDirname("tdx-collateral")
	return cmd
}

// verify builds the policy from --policy and the flags, evaluates the
// files with the verifier library, writes the results and prints them.
func (e *env) verify(ctx context.Context, f *verifyFlags, files []string) error {
	if (*f.resultKey == "") != (*f.resultOut == "") {
		return fmt.Errorf("%w: --result-key and --result-out go together", errUsage)
	}
	pol, doc, err := f.policy()
	if err != nil {
		return err
	}
	now := e.clock()
	v, err := verifier.New(pol, verifier.Config{Now: func() time.Time { return now }})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var signer crypto.Signer
	if *f.resultKey != "" {
		if signer, err = readPrivateKey(*f.resultKey); err != nil {
			return fmt.Errorf("%w: --result-key: %v", errUsage, err)
		}
	}
	if *f.policyOut != "" {
		if err := os.WriteFile(*f.policyOut, doc, 0o644); err != nil {
			return fmt.Errorf("%w: --policy-out: %v", errUsage, err)
		}
	}
	if pol.Trust.TPM.InsecureTrustEmbeddedAK && !*f.asJSON {
		fmt.Fprintln(e.stderr, "WARNING: insecure_trust_embedded_ak: the attestation key is taken from the evidence itself; this proves nothing about the machine. Demo use only.")
	}
	var inputs []verify.Input
	for _, name := range files {
		in, err := f.oci.read(ctx, name, *f.buildID)
		if err != nil {
			return err
		}
		inputs = append(inputs, in)
	}
	ev := v.Evaluate(inputs)
	f.oci.check(ev)
	if *f.resultOut != "" {
		uri, err := f.policyURI(doc)
		if err != nil {
			return err
		}
		if err := e.writeResults(ev, pol.Resolved, signer, f.resultFormat, *f.resultOut, uri, now); err != nil {
			return err
		}
	}
	if *f.asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(ev); err != nil {
			return err
		}
	} else {
		e.printEvaluation(ev)
	}
	if !ev.OK {
		return fmt.Errorf("%w: failed checks: %s", errFailed, strings.Join(ev.Failed(), ", "))
	}
	if !*f.asJSON {
		fmt.Fprintln(e.stdout, "VERIFIED")
	}
	return nil
}

func (e *env) printEvaluation(ev *verify.Evaluation) {
	for _, b := range ev.Bundles {
		if len(ev.Bundles) > 1 || len(b.Policy) > 0 {
			fmt.Fprintf(e.stdout, "== %s (sha256 %s)\n", b.Name, b.SHA256[:16])
		}
		e.printReport(b.Report)
		if len(b.Policy) > 0 {
			fmt.Fprintln(e.stdout, "policy")
			e.printChecks(b.Policy)
		}
		fmt.Fprintf(e.stdout, "SLSA BuildEnv level supported by this bundle: %d\n\n", b.Level)
	}
	if len(ev.Bundles) > 1 && len(ev.Checks) > 0 {
		fmt.Fprintln(e.stdout, "across bundles")
		e.printChecks(ev.Checks)
	}
}

func (e *env) printReport(rep *verify.Report) {
	if len(rep.Form) > 0 {
		fmt.Fprintln(e.stdout, "the bundle's form")
		e.printChecks(rep.Form)
	}
	for i, r := range rep.Results {
		if len(rep.Results) > 1 {
			fmt.Fprintf(e.stdout, "attestation %d of %d: ", i+1, len(rep.Results))
		}
		if r.Purpose != "" {
			fmt.Fprintf(e.stdout, "%s", r.Purpose)
			if r.BuildID != "" {
				fmt.Fprintf(e.stdout, "   build %s", r.BuildID)
			}
			if r.KeyDigest != "" {
				fmt.Fprintf(e.stdout, "   env key sha256: %s", r.KeyDigest)
			}
		}
		fmt.Fprintln(e.stdout)
		e.printChecks(r.Checks)
	}
	if len(rep.Chain) > 0 {
		fmt.Fprintln(e.stdout, "the bundle as a chain")
		e.printChecks(rep.Chain)
	}
}

func (e *env) printChecks(checks []attest.Check) {
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tRESULT\tDETAIL")
	for _, c := range checks {
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

func (e *env) exportAKCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "export-ak FILE",
		GroupID: groupOffline,
		Short:   "Print the AK public key (PEM) from an attestation",
		Long: `Print the public key of the TPM attestation key (AK) that an attestation carries, as PEM,
for verify --trust-ak. An AK read from an attestation is only as trustworthy as the channel
it came by: pin it from a boot you trust, or register it (attestctl register).

--json prints {"akPublicKey" (PEM), "sha256" (of the key's DER)}.`,
		Example: `  attestctl export-ak launch.intoto.jsonl > ak.pem`,
		Args:    exactArgs(1, "FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			return e.exportAK(args[0], asJSON)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the key as JSON")
	return cmd
}

func (e *env) exportAK(file string, asJSON bool) error {
	raw, err := readInput(file)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	envs, err := scai.ParseBundle(distribute.ChainInput(file, raw).Raw)
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
		if asJSON {
			return e.printJSON(akJSON(der, ""))
		}
		return pem.Encode(e.stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	return fmt.Errorf("%w: no TPM evidence in %s", errUsage, file)
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
	k, err := verify.ParsePEMPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
