package main

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/attestd/attestd/distribute/oci"
)

// pushFlags are push's flags.
type pushFlags struct {
	bundle, results, resultsKey, subject, tag string
	outputs                                   multiFlag
	asJSON                                    bool
	oci                                       *ociFlags
}

// pushJSON is push's --json output.
type pushJSON struct {
	Repository string         `json:"repository"`
	BuildID    string         `json:"buildId"`
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
		Use:     "push --bundle FILE (--output FILE... | --subject DIGEST) [flags] REPO",
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
docs/distributing.md describes the layout. Registries without the OCI 1.1 referrers API get
the referrers tag schema.

Credentials come from the Docker config file ($DOCKER_CONFIG/config.json, else
~/.docker/config.json). HTTPS only, except --plain-http for a registry on a loopback address.

Prints the subject's digest (what attestctl verify oci://REPO@DIGEST takes) and the referrers.
--json prints {"repository", "buildId", "subject": {"digest", "mediaType", "size"},
"referrers": [{"digest", "mediaType", "size", "purpose", "predicateType"}], "stats":
{"requests", "bytes"}}.

Exit codes: 0 pushed, 1 the registry refused or could not be reached, 2 bad usage or input.`,
		Example: `  attestctl push --bundle build.intoto.jsonl --output out/app.bin --tag v1.2.0 registry.example/app
  attestctl push --bundle build.intoto.jsonl --subject sha256:4f2a… --results vsa.intoto.jsonl \
      --results-key result-key.pub.pem registry.example/app
  attestctl push --plain-http --bundle build.intoto.jsonl --output app.bin 127.0.0.1:5000/app`,
		Args: exactArgs(1, "REPO"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return e.push(cmd, f, args[0])
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&f.bundle, "bundle", "", "the build's bundle `FILE` (attestctl bundle; required)")
	fs.Var(&f.outputs, "output", "an output `FILE` of the build to push (repeatable)")
	fs.StringVar(&f.subject, "subject", "", "attach to the manifest `DIGEST` (sha256:…) already in REPO, an output of the build")
	fs.StringVar(&f.tag, "tag", "", "tag the outputs' artifact as `TAG`")
	fs.StringVar(&f.results, "results", "", "verification results `FILE` to attach too (attestctl verify --result-out)")
	fs.StringVar(&f.resultsKey, "results-key", "", "`PEM` public key that signed --results")
	fs.BoolVar(&f.asJSON, "json", false, "print what was pushed as JSON")
	f.oci = newOCIFlags(fs)
	cmd.MarkFlagRequired("bundle")
	cmd.MarkFlagsMutuallyExclusive("output", "subject")
	cmd.MarkFlagsOneRequired("output", "subject")
	cmd.MarkFlagsRequiredTogether("results", "results-key")
	cmd.MarkFlagFilename("bundle", "jsonl")
	cmd.MarkFlagFilename("output")
	cmd.MarkFlagFilename("results", "jsonl")
	cmd.MarkFlagFilename("results-key", "pem")
	return cmd
}

// push reads the bundle (and results), pushes and prints.
func (e *env) push(cmd *cobra.Command, f *pushFlags, repoName string) error {
	b, err := f.build()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	files, err := b.Files(f.outputs)
	if err != nil {
		return fmt.Errorf("%w: --output: %v", errUsage, err)
	}
	var subject digest.Digest
	if f.subject != "" {
		if subject, err = digest.Parse(f.subject); err != nil {
			return fmt.Errorf("%w: --subject: %v", errUsage, err)
		}
	}
	repo, err := f.oci.open(repoName)
	if err != nil {
		return err
	}
	pub, err := repo.Publish(cmd.Context(), b, files, subject, f.tag)
	if errors.Is(err, oci.ErrNotOutput) {
		return fmt.Errorf("%w: --subject: %v", errUsage, err)
	} else if err != nil {
		return err
	}
	out := pushJSON{Repository: repo.Name(), BuildID: b.ID, Subject: descOf(pub.Subject.Digest, pub.Subject.MediaType, pub.Subject.Size), Stats: repo.Stats()}
	for i, r := range pub.Referrers {
		a := b.Attestations[i].Annotations
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
