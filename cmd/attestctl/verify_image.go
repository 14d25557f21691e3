package main

import (
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// Check names of verify-image.
const (
	checkProvSignature = "provenance-signature"
	checkProvStatement = "provenance-statement"
	checkProvSubject   = "provenance-subject"
)

// imageVerification is verify-image's result (its --json output).
type imageVerification struct {
	OK         bool                    `json:"ok"`
	Checks     []attest.Check          `json:"checks"`
	Provenance *verify.ImageProvenance `json:"provenance,omitempty"`
}

func (e *env) verifyImageCmd() *cobra.Command {
	var keyFiles, provFiles multiFlag
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "verify-image --key PEM --provenance FILE ARTIFACT...",
		GroupID: groupOffline,
		Short:   "Check image files against the bake's signed SLSA provenance",
		Long: `Check a baked image's files (disk.img, uki.efi, …) against the image's signed SLSA
provenance (attestctl reference --provenance-out; docs/reference-values.md): the provenance is
signed by one of the --keys, is an in-toto Statement v1 with a SLSA provenance v1 predicate,
and names each file, by base name, with its sha256. The provenance is a DSSE envelope or a
Sigstore bundle v0.3 (reference --format sigstore), which sigstore-go verifies with the --key
its key hint names. Prints the checks and who built the
image, how and from what.

Exit codes: 0 every check passes, 1 one fails (stderr names it), 2 bad usage or a file that
cannot be read (a missing artifact is exit 2, not a failed check).

--json prints {"ok", "checks": [{"check", "ok", "skipped", "detail"}], "provenance"} and no
VERIFIED line.`,
		Example: `  attestctl verify-image --key bake-key.pub.pem --provenance provenance.intoto.json disk.img uki.efi`,
		Args:    minArgs(1, "ARTIFACT files"),
		RunE: func(_ *cobra.Command, args []string) error {
			return e.verifyImage(keyFiles, provFiles, asJSON, args)
		},
	}
	fs := cmd.Flags()
	fs.Var(&keyFiles, "key", "`PEM` public key of the image baker (required, repeatable)")
	fs.Var(&provFiles, "provenance", "the image's signed provenance `FILE` (attestctl reference --provenance-out; required)")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("provenance")
	cmd.MarkFlagFilename("key", "pem")
	cmd.MarkFlagFilename("provenance", "json")
	return cmd
}

// verifyImage checks a baked image's artifacts against its signed SLSA
// provenance (docs/reference-values.md, "The image's provenance").
func (e *env) verifyImage(keyFiles, provFiles []string, asJSON bool, artifacts []string) error {
	switch {
	case len(keyFiles) == 0:
		return fmt.Errorf("%w: verify-image needs --key", errUsage)
	case len(provFiles) != 1:
		return fmt.Errorf("%w: verify-image needs --provenance, once", errUsage)
	case len(artifacts) == 0:
		return fmt.Errorf("%w: verify-image takes one or more ARTIFACT files", errUsage)
	}
	var keys []crypto.PublicKey
	for _, f := range keyFiles {
		k, err := readPublicKey(f)
		if err != nil {
			return fmt.Errorf("%w: --key: %v", errUsage, err)
		}
		keys = append(keys, k)
	}
	raw, err := readInput(provFiles[0])
	if err != nil {
		return fmt.Errorf("%w: --provenance: %v", errUsage, err)
	}
	// Every artifact is read before any verdict: an unreadable one is bad
	// input (exit 2), not a failed check.
	sums := make([][32]byte, len(artifacts))
	for i, f := range artifacts {
		if sums[i], err = measure.FileSHA256(f); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
	}

	res := checkImage(raw, keys, artifacts, sums)
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		e.printChecks(res.Checks)
		if res.Provenance != nil {
			e.printProvenance(res.Provenance)
		}
	}
	if !res.OK {
		var failed []string
		for _, c := range res.Checks {
			if !c.OK && !c.Skip {
				failed = append(failed, c.Name)
			}
		}
		return fmt.Errorf("%w: failed checks: %s", errFailed, strings.Join(failed, ", "))
	}
	if !asJSON {
		fmt.Fprintln(e.stdout, "VERIFIED")
	}
	return nil
}

// checkImage opens the provenance and checks each artifact (path, sha256)
// against the subject named by its base name.
func checkImage(raw []byte, keys []crypto.PublicKey, paths []string, sums [][32]byte) *imageVerification {
	res := &imageVerification{}
	add := func(name string, err error, detail string) {
		c := attest.Check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
		}
		res.Checks = append(res.Checks, c)
	}
	notChecked := func(prereq string) {
		for range paths {
			res.Checks = append(res.Checks, attest.Check{Name: checkProvSubject, Detail: "not checked: " + prereq + " failed"})
		}
	}
	p, err := openImageProvenance(raw, keys)
	switch {
	case errors.Is(err, verify.ErrProvenanceStatement):
		add(checkProvSignature, nil, signedDetail(len(keys)))
		add(checkProvStatement, err, "")
		notChecked(checkProvStatement)
		return res
	case err != nil:
		add(checkProvSignature, err, "")
		res.Checks = append(res.Checks, attest.Check{Name: checkProvStatement, Detail: "not checked: " + checkProvSignature + " failed"})
		notChecked(checkProvSignature)
		return res
	}
	res.Provenance = p
	add(checkProvSignature, nil, signedDetail(len(keys)))
	add(checkProvStatement, nil, fmt.Sprintf("in-toto Statement v1, SLSA provenance v1, %d subject(s)", len(p.Subjects)))
	for i, path := range paths {
		name := filepath.Base(path)
		c := attest.Check{Name: checkProvSubject, OK: true,
			Detail: fmt.Sprintf("%s: sha256 %s is subject %s", path, hex.EncodeToString(sums[i][:]), name)}
		var mm *verify.ArtifactMismatchError
		switch err := p.CheckArtifact(name, sums[i]); {
		case errors.As(err, &mm):
			c.OK, c.Detail = false, fmt.Sprintf("%s: sha256 %x, provenance says %x for %s", path, mm.SHA256, mm.Provenance, name)
		case err != nil:
			c.OK, c.Detail = false, fmt.Sprintf("%s: %v", path, err)
		}
		res.Checks = append(res.Checks, c)
	}
	res.OK = true
	for _, c := range res.Checks {
		res.OK = res.OK && c.OK
	}
	return res
}

// openImageProvenance is verify.OpenImageProvenance of either form; a
// Sigstore bundle that does not verify is an ErrProvenanceSignature.
func openImageProvenance(raw []byte, keys []crypto.PublicKey) (*verify.ImageProvenance, error) {
	env, err := distribute.ToDSSE(raw, keys)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", verify.ErrProvenanceSignature, err)
	}
	return verify.OpenImageProvenance(env, keys)
}

func signedDetail(nkeys int) string {
	if nkeys == 1 {
		return "DSSE envelope signed by the --key"
	}
	return fmt.Sprintf("DSSE envelope signed by one of the %d --keys", nkeys)
}

// printProvenance summarizes an authenticated provenance: who built the
// image, how, and from what.
func (e *env) printProvenance(p *verify.ImageProvenance) {
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "builder\t%s\n", p.BuilderID)
	fmt.Fprintf(tw, "build type\t%s\n", p.BuildType)
	if !p.FinishedOn.IsZero() {
		fmt.Fprintf(tw, "finished\t%s\n", p.FinishedOn.UTC().Format(time.RFC3339))
	}
	keys := make([]string, 0, len(p.ExternalParameters))
	for k := range p.ExternalParameters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, ok := p.ExternalParameters[k].(string)
		if !ok {
			b, _ := json.Marshal(p.ExternalParameters[k])
			v = string(b)
		}
		fmt.Fprintf(tw, "param %s\t%s\n", printable(k), printable(v))
	}
	for _, d := range p.ResolvedDependencies {
		algs := make([]string, 0, len(d.Digest))
		for a, h := range d.Digest {
			algs = append(algs, a+":"+h)
		}
		sort.Strings(algs)
		what := d.URI
		if what == "" {
			what = d.Name
		}
		fmt.Fprintf(tw, "dependency\t%s %s\n", printable(what), printable(strings.Join(algs, " ")))
	}
	tw.Flush()
	fmt.Fprintln(e.stdout)
}

// printable quotes s if it has characters a terminal would interpret.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
