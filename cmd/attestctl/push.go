package main

import (
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/attestd/attestd/distribute/oci"
)

// pushFlags are push's flags.
type pushFlags struct {
	bundle, results, resultsKey, subject, tag string
	provenance, reference, key                string
	outputs                                   multiFlag
	asJSON                                    bool
	oci                                       *ociFlags
}

// pushJSON is push's --json output.
type pushJSON struct {
	Repository string         `json:"repository"`
	BuildID    string         `json:"buildId,omitempty"`
	Subject    descJSON       `json:"subject"`
	Referrers  []referrerJSON `json:"referrers"`
	Stats      oci.Stats      `json:"stats"`
}

type descJSON struct {
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
}

type referrerJSON struct {
	descJSON
	Purpose       string `json:"purpose"`
	PredicateType string `json:"predicateType"`
}

func (e *env) pushCmd() *cobra.Command {
	f := &pushFlags{}
	cmd := &cobra.Command{
		Use:     "push (--bundle FILE | --provenance FILE --reference FILE --key PEM) (--output FILE... | --subject DIGEST) [flags] REPO",
		GroupID: groupRegistry,
		Short:   "Publish a build's outputs and attestations to an OCI registry",
		Long: `Publish a completed build to the OCI repository REPO (HOST[:PORT]/NAME): its output files
(--output, each an output of the bundle's completion attestation) as one OCI artifact, tagged
--tag if given; or, with --subject, the image manifest already in REPO that the build produced.
Then attach to it, as OCI referrers, every signed envelope of the bundle (--bundle, as
attestctl bundle writes it, either form): launch, admission, dispatch, completion and the
statements the environment signed (e.g. SLSA provenance), each a Sigstore bundle v0.3 with the
event log it names, annotated with its purpose, predicate type, build ID and env key; and the
verification results of --results (attestctl verify --result-out), signed by --results-key.

A baked image instead (--provenance, --reference and --key, as attestctl reference writes
them): its files (--output: disk.img, uki.efi, each a subject of the provenance by base name
and sha256) as one OCI artifact, with the signed provenance and reference values, checked
against the bake's public --key, attached as referrers; attestctl pull fetches it back.

docs/distributing.md describes the layout. Registries without the OCI 1.1 referrers API get
the referrers tag schema.

Credentials come from the Docker config file ($DOCKER_CONFIG/config.json, else
~/.docker/config.json). HTTPS only, except --plain-http for a registry on a loopback address.

Prints the subject's digest (what attestctl verify oci://REPO@DIGEST takes) and the referrers.
--json prints {"repository", "buildId" (builds only), "subject": {"digest", "mediaType", "size"},
"referrers": [{"digest", "mediaType", "size", "purpose", "predicateType"}], "stats":
{"requests", "bytes"}}.

Exit codes: 0 pushed, 1 the registry refused or could not be reached, 2 bad usage or input.`,
		Example: `  attestctl push --bundle build.intoto.jsonl --output out/app.bin --tag v1.2.0 registry.example/app
  attestctl push --bundle build.intoto.jsonl --subject sha256:4f2a… --results vsa.intoto.jsonl \
      --results-key result-key.pub.pem registry.example/app
  attestctl push --plain-http --bundle build.intoto.jsonl --output app.bin 127.0.0.1:5000/app
  attestctl push --provenance provenance.intoto.json --reference reference.intoto.json \
      --key bake-key.pub.pem --output disk.img --output uki.efi --tag v7 registry.example/runner`,
		Args: exactArgs(1, "REPO"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.push(cmd, f, args[0])
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.bundle, "bundle", "", "the build's bundle `FILE` (attestctl bundle)")
	fs.StringVar(&f.provenance, "provenance", "", "a baked image's signed provenance `FILE` (attestctl reference --provenance-out)")
	fs.StringVar(&f.reference, "reference", "", "a baked image's signed reference values `FILE` (attestctl reference --out)")
	fs.StringVar(&f.key, "key", "", "`PEM` public key of the image baker, which signed --provenance and --reference")
	fs.Var(&f.outputs, "output", "an output `FILE` of the build to push (repeatable)")
	fs.StringVar(&f.subject, "subject", "", "attach to the manifest `DIGEST` (sha256:…) already in REPO, an output of the build")
	fs.StringVar(&f.tag, "tag", "", "tag the outputs' artifact as `TAG`")
	fs.StringVar(&f.results, "results", "", "verification results `FILE` to attach too (attestctl verify --result-out)")
	fs.StringVar(&f.resultsKey, "results-key", "", "`PEM` public key that signed --results")
	fs.BoolVar(&f.asJSON, "json", false, "print what was pushed as JSON")
	f.oci = newOCIFlags(fs, e.stderr)
	cmd.MarkFlagsOneRequired("bundle", "provenance")
	cmd.MarkFlagsMutuallyExclusive("bundle", "provenance")
	cmd.MarkFlagsRequiredTogether("provenance", "reference", "key")
	cmd.MarkFlagsMutuallyExclusive("provenance", "subject")
	cmd.MarkFlagsMutuallyExclusive("provenance", "results")
	cmd.MarkFlagsMutuallyExclusive("output", "subject")
	cmd.MarkFlagsOneRequired("output", "subject")
	cmd.MarkFlagsRequiredTogether("results", "results-key")
	cmd.MarkFlagFilename("bundle", "jsonl")
	cmd.MarkFlagFilename("output")
	cmd.MarkFlagFilename("results", "jsonl")
	cmd.MarkFlagFilename("results-key", "pem")
	cmd.MarkFlagFilename("provenance", "json")
	cmd.MarkFlagFilename("reference", "json")
	cmd.MarkFlagFilename("key", "pem")
	return cmd
}

// push reads what to publish, pushes it and prints it.
func (e *env) push(cmd *cobra.Command, f *pushFlags, repoName string) error {
	publication, buildID, err := f.publication()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	repo, err := f.oci.open(repoName)
	if err != nil {
		return err
	}
	pub, err := repo.Publish(cmd.Context(), publication)
	if err != nil {
		return err
	}
	out := pushJSON{Repository: repo.Name(), BuildID: buildID, Subject: descOf(pub.Subject.Digest, pub.Subject.MediaType, pub.Subject.Size), Stats: repo.Stats()}
	for i, r := range pub.Referrers {
		a := publication.Attestations[i].Annotations
		out.Referrers = append(out.Referrers, referrerJSON{descOf(r.Digest, r.MediaType, r.Size), a[oci.AnnotationPurpose], a[oci.AnnotationPredicateType]})
	}
	if f.asJSON {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "%s@%s\n", out.Repository, out.Subject.Digest)
	for _, r := range out.Referrers {
		fmt.Fprintf(e.stdout, "  referrer %s  %-19s %s\n", r.Digest, r.Purpose, r.PredicateType)
	}
	return nil
}

// publication is what the flags say to publish: a baked image (with
// --provenance) or a build, and the build's ID.
func (f *pushFlags) publication() (oci.Publication, string, error) {
	if f.provenance != "" {
		im, err := f.image()
		if err != nil {
			return oci.Publication{}, "", err
		}
		files, err := im.Files(f.outputs)
		if err != nil {
			return oci.Publication{}, "", fmt.Errorf("--output: %w", err)
		}
		return im.Publication(files, f.tag), "", nil
	}
	b, err := f.build()
	if err != nil {
		return oci.Publication{}, "", err
	}
	files, err := b.Files(f.outputs)
	if err != nil {
		return oci.Publication{}, "", fmt.Errorf("--output: %w", err)
	}
	var subject digest.Digest
	if f.subject != "" {
		if subject, err = digest.Parse(f.subject); err != nil {
			return oci.Publication{}, "", fmt.Errorf("--subject: %w", err)
		}
	}
	pub, err := b.Publication(files, subject, f.tag)
	if err != nil {
		return oci.Publication{}, "", fmt.Errorf("--subject: %w", err)
	}
	return pub, b.ID, nil
}

// image reads --provenance and --reference, signed by --key.
func (f *pushFlags) image() (*oci.Image, error) {
	prov, err := readInput(f.provenance)
	if err != nil {
		return nil, err
	}
	ref, err := readInput(f.reference)
	if err != nil {
		return nil, err
	}
	key, err := readPublicKey(f.key)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	return oci.FromImage(prov, ref, key)
}

// build reads --bundle and, with --results, the verification results.
func (f *pushFlags) build() (*oci.Build, error) {
	raw, err := readInput(f.bundle)
	if err != nil {
		return nil, err
	}
	b, err := oci.FromBundle(raw)
	if err != nil {
		return nil, fmt.Errorf("--bundle: %w", err)
	}
	if f.results == "" {
		return b, nil
	}
	res, err := readInput(f.results)
	if err != nil {
		return nil, err
	}
	key, err := readPublicKey(f.resultsKey)
	if err != nil {
		return nil, fmt.Errorf("--results-key: %w", err)
	}
	if err := b.AddResults(res, key); err != nil {
		return nil, fmt.Errorf("--results: %w", err)
	}
	return b, nil
}

func descOf(d digest.Digest, mediaType string, size int64) descJSON {
	return descJSON{Digest: d.String(), MediaType: mediaType, Size: size}
}
