package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/attestd/attestd/distribute/oci"
	"github.com/attestd/attestd/verify"
)

// pullJSON is pull's --json output.
type pullJSON struct {
	Subject    descJSON                `json:"subject"`
	Files      []pulledFileJSON        `json:"files"`
	Provenance *verify.ImageProvenance `json:"provenance"`
	Stats      oci.Stats               `json:"stats"`
}

type pulledFileJSON struct {
	Path string `json:"path"`
	descJSON
}

func (e *env) pullCmd() *cobra.Command {
	var key, out string
	var asJSON bool
	var of *ociFlags
	cmd := &cobra.Command{
		Use:     "pull --key PEM --out DIR oci://REPO@sha256:HEX",
		GroupID: groupRegistry,
		Short:   "Fetch a baked image from an OCI registry after verifying its provenance",
		Long: `Fetch a baked image that attestctl push published (--provenance), by digest: first its
signed provenance and reference values (the referrers), verified with the bake's public --key;
then the check that every file of the image is a subject of the provenance, by name and
sha256; only then the files, each into --out under its name once its digest matched, with the
provenance and the reference values beside them (provenance.intoto.json,
reference.intoto.json: DSSE envelopes, as verify --reference and verify-image take them).
Nothing is written under a file's name that did not verify. Credentials and --plain-http as
for push.

--json prints {"subject", "files": [{"path", "digest", "mediaType", "size"}], "provenance",
"stats": {"requests", "bytes"}}.

Exit codes: 0 pulled and verified, 1 not verified (a signature, a subject, a digest), 2 bad
usage or a registry that cannot be read.`,
		Example: `  attestctl pull --key bake-key.pub.pem --out image/ oci://registry.example/runner@sha256:4f2a…`,
		Args:    exactArgs(1, "oci://REPO@sha256:HEX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.pull(cmd, of, key, out, asJSON, args[0])
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&key, "key", "", "`PEM` public key of the image baker (required)")
	fs.StringVar(&out, "out", "", "write the image's files to `DIR` (required; created if missing)")
	fs.BoolVar(&asJSON, "json", false, "print what was pulled as JSON")
	of = newOCIFlags(fs, e.stderr)
	cmd.MarkFlagRequired("key")
	cmd.MarkFlagRequired("out")
	cmd.MarkFlagFilename("key", "pem")
	cmd.MarkFlagDirname("out")
	return cmd
}

func (e *env) pull(cmd *cobra.Command, of *ociFlags, keyFile, out string, asJSON bool, ref string) error {
	key, err := readPublicKey(keyFile)
	if err != nil {
		return fmt.Errorf("%w: --key: %v", errUsage, err)
	}
	name, d, err := oci.ParseReference(ref)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("%w: --out: %v", errUsage, err)
	}
	repo, err := of.open(name)
	if err != nil {
		return err
	}
	im, err := repo.PullImage(cmd.Context(), d, key, out)
	if err != nil {
		return pullError(err)
	}
	res := pullJSON{Subject: descOf(im.Subject.Digest, im.Subject.MediaType, im.Subject.Size), Provenance: im.Provenance, Stats: repo.Stats()}
	for _, f := range im.Files {
		res.Files = append(res.Files, pulledFileJSON{Path: f.Annotations[oci.AnnotationTitle], descJSON: descOf(f.Digest, f.MediaType, f.Size)})
	}
	if asJSON {
		return e.printJSON(res)
	}
	for _, f := range res.Files {
		fmt.Fprintf(e.stdout, "%s  %s  %d bytes\n", f.Digest, f.Path, f.Size)
	}
	e.printProvenance(im.Provenance)
	fmt.Fprintln(e.stdout, "VERIFIED")
	return nil
}
