package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	ita "github.com/in-toto/attestation/go/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/agent"
	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// descriptorFlags collect resource descriptors from files of JSON arrays
// (--X-json FILE) and from artifact paths hashed here (--X PATH).
type descriptorFlags struct {
	jsonFiles multiFlag
	paths     multiFlag
}

func (d *descriptorFlags) load() ([]*apiv1.ResourceDescriptor, error) {
	var out []*apiv1.ResourceDescriptor
	for _, f := range d.jsonFiles {
		raw, err := readInput(f)
		if err != nil {
			return nil, err
		}
		rds, err := parseDescriptors(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, rds...)
	}
	for _, p := range d.paths {
		sum, err := measure.FileSHA256(p)
		if err != nil {
			return nil, err
		}
		out = append(out, &apiv1.ResourceDescriptor{Name: p, Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}})
	}
	return out, nil
}

// parseDescriptors reads a JSON array of in-toto ResourceDescriptors.
func parseDescriptors(raw []byte) ([]*apiv1.ResourceDescriptor, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, fmt.Errorf("want a JSON array of in-toto resource descriptors: %w", err)
	}
	rds := make([]*ita.ResourceDescriptor, 0, len(items))
	for i, it := range items {
		rd := &ita.ResourceDescriptor{}
		if err := protojson.Unmarshal(it, rd); err != nil {
			return nil, fmt.Errorf("descriptor %d: %w", i, err)
		}
		rds = append(rds, rd)
	}
	return agent.ToAPI(rds), nil
}

// outputJSON is the --json summary of a command that wrote an attestation,
// an envelope or a bundle to a file.
type outputJSON struct {
	fileSummary
	BuildID      string `json:"buildId,omitempty"`
	Attestations int    `json:"attestations,omitempty"`
	Repeated     bool   `json:"repeated,omitempty"`
}

// writeOut writes an envelope or bundle to out (or stdout), ending in a
// newline. With asJSON (out is then set) it prints info, completed with
// the file's summary, instead of a note on stderr.
func (e *env) writeOut(out string, b []byte, what string, asJSON bool, info *outputJSON) error {
	if len(b) == 0 || b[len(b)-1] != '\n' {
		b = append(b, '\n')
	}
	if out == "" {
		_, err := e.stdout.Write(b)
		return err
	}
	if err := os.WriteFile(out, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	if asJSON {
		if info == nil {
			info = &outputJSON{}
		}
		info.fileSummary = summarize(out, b)
		return e.printJSON(info)
	}
	fmt.Fprintf(e.stderr, "%s (%d bytes) written to %s\n", what, len(b), out)
	return nil
}

// stepFlags are the flags dispatch and completion share.
type stepFlags struct {
	buildID, nonceHex, out *string
	asJSON                 *bool
	format                 *format
}

func newStepFlags(fs *pflag.FlagSet, step string) *stepFlags {
	return &stepFlags{
		buildID:  fs.String("build-id", "", "the build `ID` assigned by the platform (required)"),
		nonceHex: fs.String("nonce", "", "the control plane's nonce for this "+step+" (`HEX`, optional)"),
		out:      fs.String("out", "", "write the "+step+" attestation to `FILE` (default: stdout)"),
		asJSON:   fs.Bool("json", false, "print a JSON summary of the file written (needs --out)"),
		format:   newFormat(fs, "format", "the "+step+" attestation"),
	}
}

// writeAttestation writes one attestation with its event log in the chosen
// form (writeOut).
func (e *env) writeAttestation(f *format, out string, lines []byte, what string, asJSON bool, info *outputJSON) error {
	b, err := f.encode(lines)
	if err != nil {
		return err
	}
	return e.writeOut(out, b, what, asJSON, info)
}

// nonce checks the flags and returns the nonce, if any.
func (f *stepFlags) nonce() ([]byte, error) {
	if *f.buildID == "" {
		return nil, fmt.Errorf("%w: --build-id is required", errUsage)
	}
	if err := jsonNeedsOut(*f.asJSON, *f.out); err != nil {
		return nil, err
	}
	return optionalNonce(*f.nonceHex)
}

func optionalNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	return parseNonce(s)
}

const outputJSONDoc = `--json (with --out) prints {"file", "bytes", "sha256", "buildId"} of the file written`

func (e *env) bindCmd() *cobra.Command {
	var req descriptorFlags
	cmd := &cobra.Command{
		Use:     "bind --build-id ID [--request FILE]... [--nonce HEX] [--out FILE]",
		GroupID: groupDaemon,
		Short:   "Dispatch: bind this environment to one build",
		Long: `Dispatch: extend a build-id event (the build ID and the digest of the request) and return
the dispatch attestation, with the event log it names. An environment takes one build:
another build ID, or the same one with another request, is refused (exit 1); the same
build ID and request again return the same dispatch attestation.

--request is a JSON array of in-toto resource descriptors describing the build request.

` + outputJSONDoc + `, and "repeated": true when the build was already bound.`,
		Example: `  attestctl bind --build-id build-0001 --request request.json --nonce "$nonce" --out dispatch.intoto.jsonl`,
		Args:    cobra.NoArgs,
	}
	sf := newStepFlags(cmd.Flags(), "dispatch")
	cmd.Flags().Var(&req.jsonFiles, "request", "`FILE`: a JSON array of in-toto resource descriptors describing the build request (repeatable)")
	cmd.MarkFlagRequired("build-id")
	cmd.MarkFlagFilename("request", "json")
	cmd.MarkFlagFilename("out")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		nonce, err := sf.nonce()
		if err != nil {
			return err
		}
		request, err := req.load()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return e.call(cmd.Context(), "bind", func(ctx context.Context, c *apiv1.Client) error {
			resp, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: *sf.buildID, Request: request, Nonce: nonce})
			if err != nil {
				return err
			}
			if resp.GetRepeated() {
				fmt.Fprintf(e.stderr, "build %s was already bound; the same dispatch attestation is returned\n", *sf.buildID)
			}
			return e.writeAttestation(sf.format, *sf.out, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), nil), "dispatch attestation",
				*sf.asJSON, &outputJSON{BuildID: *sf.buildID, Repeated: resp.GetRepeated()})
		})
	}
	return cmd
}

func (e *env) extendCmd() *cobra.Command {
	var domain, op, content, contentFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "extend --domain D --operation O [--content S | --content-file FILE]",
		GroupID: groupDaemon,
		Short:   "Record a runtime measurement during the build",
		Long: `Record a runtime measurement: one runtime event (domain, operation, content) extended
into the agent's register, between dispatch and completion.

--json prints {"seq", "digests"} of the event.`,
		Example: `  attestctl extend --domain deps --operation fetch --content "dep.tar@sha256:$(sha256sum dep.tar | cut -d' ' -f1)"`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data := []byte(content)
			if contentFile != "" {
				b, err := readInput(contentFile)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				data = b
			}
			return e.call(cmd.Context(), "extend", func(ctx context.Context, c *apiv1.Client) error {
				resp, err := c.Extend(ctx, &apiv1.ExtendRequest{Domain: domain, Operation: op, Content: data})
				if err != nil {
					return err
				}
				if asJSON {
					return e.printJSON(struct {
						Seq     uint64            `json:"seq"`
						Digests map[string]string `json:"digests"`
					}{resp.GetSeq(), resp.GetDigests()})
				}
				fmt.Fprintf(e.stdout, "event %d %s\n", resp.GetSeq(), shortDigest(resp.GetDigests()))
				return nil
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&domain, "domain", "", "what is measured, e.g. deps (required)")
	fs.StringVar(&op, "operation", "", "what happened, e.g. fetch (required)")
	fs.StringVar(&content, "content", "", "the measurement, e.g. name@sha256:…")
	fs.StringVar(&contentFile, "content-file", "", "read the measurement from `FILE` instead (- for stdin)")
	fs.BoolVar(&asJSON, "json", false, "print the event as JSON")
	cmd.MarkFlagRequired("domain")
	cmd.MarkFlagRequired("operation")
	cmd.MarkFlagsMutuallyExclusive("content", "content-file")
	cmd.MarkFlagFilename("content-file")
	return cmd
}

func (e *env) completeCmd() *cobra.Command {
	var in, outp descriptorFlags
	cmd := &cobra.Command{
		Use:     "complete --build-id ID --output PATH... [--input PATH...] [--out FILE]",
		GroupID: groupDaemon,
		Short:   "Completion: bind the build's inputs and outputs",
		Long: `Completion: extend a complete event (the build ID and the digest of the inputs and
outputs) and return the completion attestation, whose subjects are the outputs. Files given
by --input and --output are hashed here; --inputs and --outputs take JSON arrays of in-toto
resource descriptors. At least one output is required.

` + outputJSONDoc + `.`,
		Example: `  attestctl complete --build-id build-0001 --input dep.tar --output out/app.bin --out complete.intoto.jsonl`,
		Args:    cobra.NoArgs,
	}
	sf := newStepFlags(cmd.Flags(), "completion")
	fs := cmd.Flags()
	fs.Var(&in.paths, "input", "an input `FILE`, hashed here (repeatable)")
	fs.Var(&in.jsonFiles, "inputs", "`FILE`: a JSON array of in-toto resource descriptors of inputs (repeatable)")
	fs.Var(&outp.paths, "output", "an output `FILE`, hashed here (repeatable)")
	fs.Var(&outp.jsonFiles, "outputs", "`FILE`: a JSON array of in-toto resource descriptors of outputs (repeatable)")
	cmd.MarkFlagRequired("build-id")
	for _, f := range []string{"input", "output", "out"} {
		cmd.MarkFlagFilename(f)
	}
	cmd.MarkFlagFilename("inputs", "json")
	cmd.MarkFlagFilename("outputs", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		nonce, err := sf.nonce()
		if err != nil {
			return err
		}
		inputs, err := in.load()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		outputs, err := outp.load()
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if len(outputs) == 0 {
			return fmt.Errorf("%w: at least one --output or --outputs is required", errUsage)
		}
		return e.call(cmd.Context(), "complete", func(ctx context.Context, c *apiv1.Client) error {
			resp, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: *sf.buildID, Inputs: inputs, Outputs: outputs, Nonce: nonce})
			if err != nil {
				return err
			}
			return e.writeAttestation(sf.format, *sf.out, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), nil), "completion attestation",
				*sf.asJSON, &outputJSON{BuildID: *sf.buildID})
		})
	}
	return cmd
}

func (e *env) signCmd() *cobra.Command {
	var buildID, stFile, out string
	var asJSON bool
	var form *format
	cmd := &cobra.Command{
		Use:     "sign --build-id ID --statement FILE [--out FILE]",
		GroupID: groupDaemon,
		Short:   "Sign the build's provenance with the environment key",
		Long: `Sign an in-toto Statement v1 (e.g. the build's SLSA provenance) with the environment key,
after completion; its subjects must be outputs of the build. Prints the DSSE envelope, or with
--format sigstore the Sigstore bundle (whose key hint names the environment key).

` + outputJSONDoc + `.`,
		Example: `  attestctl sign --build-id build-0001 --statement provenance.json --out provenance.intoto.json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := jsonNeedsOut(asJSON, out); err != nil {
				return err
			}
			st, err := readInput(stFile)
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			return e.call(cmd.Context(), "sign", func(ctx context.Context, c *apiv1.Client) error {
				resp, err := c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: buildID, Statement: st})
				if err != nil {
					return err
				}
				signed := resp.GetEnvelope()
				if form.sigstore() {
					if signed, err = signedBundle(ctx, c, signed); err != nil {
						return err
					}
				}
				return e.writeOut(out, signed, "signed statement", asJSON, &outputJSON{BuildID: buildID})
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&buildID, "build-id", "", "the build `ID` (required)")
	fs.StringVar(&stFile, "statement", "", "in-toto Statement v1 JSON `FILE` to sign, e.g. SLSA provenance (required; - for stdin)")
	fs.StringVar(&out, "out", "", "write the DSSE envelope to `FILE` (default: stdout)")
	fs.BoolVar(&asJSON, "json", false, "print a JSON summary of the file written (needs --out)")
	form = newFormat(fs, "format", "the signed statement")
	cmd.MarkFlagRequired("build-id")
	cmd.MarkFlagRequired("statement")
	cmd.MarkFlagFilename("statement", "json")
	cmd.MarkFlagFilename("out")
	return cmd
}

// signedBundle is a statement the environment signed (DSSE) as a Sigstore
// bundle: the daemon's identity gives the env key that signed it.
func signedBundle(ctx context.Context, c *apiv1.Client, envelope []byte) ([]byte, error) {
	id, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	if err != nil {
		return nil, err
	}
	pub, err := x509.ParsePKIXPublicKey(id.GetPublicKey())
	if err != nil {
		return nil, fmt.Errorf("env key from the daemon: %w", err)
	}
	f := format(formatSigstore)
	return f.encode(envelope, pub)
}

func (e *env) bundleCmd() *cobra.Command {
	var out, extra string
	var asJSON bool
	var form *format
	cmd := &cobra.Command{
		Use:     "bundle [--out FILE] [--add FILE]",
		GroupID: groupDaemon,
		Short:   "Print all attestations of this environment (.intoto.jsonl)",
		Long: `Print every attestation of this environment, in order (launch, admissions, dispatch,
completion, signed statements), with the event log once and the admissions' inclusion proofs,
as JSON Lines: what attestctl verify takes. With --format sigstore each signed line is a
Sigstore bundle v0.3 instead of a DSSE envelope (docs/formats.md); --add may hold either form.

--json (with --out) prints {"file", "bytes", "sha256", "buildId", "attestations"} of the
file written.`,
		Example: `  attestctl bundle --out build.intoto.jsonl`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := jsonNeedsOut(asJSON, out); err != nil {
				return err
			}
			var add []byte
			if extra != "" {
				b, err := readInput(extra)
				if err != nil {
					return fmt.Errorf("%w: %v", errUsage, err)
				}
				add = b
			}
			return e.call(cmd.Context(), "bundle", func(ctx context.Context, c *apiv1.Client) error {
				resp, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
				if err != nil {
					return err
				}
				jsonl, err := form.encode(append(agent.BundleOf(resp).Encode(), add...))
				if err != nil {
					return err
				}
				if out == "" {
					_, err := e.stdout.Write(jsonl)
					return err
				}
				if err := os.WriteFile(out, jsonl, 0o644); err != nil {
					return fmt.Errorf("write bundle: %w", err)
				}
				if asJSON {
					return e.printJSON(outputJSON{fileSummary: summarize(out, jsonl), BuildID: resp.GetBuildId(), Attestations: len(resp.GetEnvelopes())})
				}
				fmt.Fprintf(e.stderr, "bundle of %d attestations for build %q written to %s\n", len(resp.GetEnvelopes()), resp.GetBuildId(), out)
				return nil
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&out, "out", "", "write the bundle (.intoto.jsonl) to `FILE` (default: stdout)")
	fs.StringVar(&extra, "add", "", "also append the envelopes in `FILE` (e.g. statements signed elsewhere)")
	fs.BoolVar(&asJSON, "json", false, "print a JSON summary of the file written (needs --out)")
	form = newFormat(fs, "format", "the bundle's signed lines")
	cmd.MarkFlagFilename("out")
	cmd.MarkFlagFilename("add")
	return cmd
}

// call dials the daemon and runs fn with a timeout.
func (e *env) call(ctx context.Context, method string, fn func(context.Context, *apiv1.Client) error) error {
	c, err := e.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if err := fn(ctx, c); err != nil {
		return e.rpcError(method, err)
	}
	return nil
}
