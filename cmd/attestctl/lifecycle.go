package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	ita "github.com/in-toto/attestation/go/v1"
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

// writeOut writes an envelope or bundle to out (or stdout), ending in a
// newline.
func (e *env) writeOut(out string, b []byte, what string) error {
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
	fmt.Fprintf(e.stderr, "%s (%d bytes) written to %s\n", what, len(b), out)
	return nil
}

// stepFlags are the flags dispatch and completion share.
type stepFlags struct {
	buildID, nonceHex, out *string
}

func newStepFlags(fs *flag.FlagSet, step string) *stepFlags {
	return &stepFlags{
		buildID:  fs.String("build-id", "", "the build ID assigned by the platform (required)"),
		nonceHex: fs.String("nonce", "", "the control plane's nonce for this "+step+" (hex, optional)"),
		out:      fs.String("out", "", "write the "+step+" attestation to FILE (default: stdout)"),
	}
}

// nonce checks the build ID is given and returns the nonce, if any.
func (f *stepFlags) nonce() ([]byte, error) {
	if *f.buildID == "" {
		return nil, fmt.Errorf("%w: --build-id is required", errUsage)
	}
	return optionalNonce(*f.nonceHex)
}

func optionalNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	return parseNonce(s)
}

func (e *env) bind(ctx context.Context, args []string) error {
	fs := e.newFlagSet("bind")
	sf := newStepFlags(fs, "dispatch")
	var req descriptorFlags
	fs.Var(&req.jsonFiles, "request", "JSON array of in-toto resource descriptors describing the build request (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	nonce, err := sf.nonce()
	if err != nil {
		return err
	}
	request, err := req.load()
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return e.call(ctx, "bind", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: *sf.buildID, Request: request, Nonce: nonce})
		if err != nil {
			return err
		}
		if resp.GetRepeated() {
			fmt.Fprintf(e.stderr, "build %s was already bound; the same dispatch attestation is returned\n", *sf.buildID)
		}
		return e.writeOut(*sf.out, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), nil), "dispatch attestation")
	})
}

func (e *env) extend(ctx context.Context, args []string) error {
	fs := e.newFlagSet("extend")
	domain := fs.String("domain", "", "what is measured, e.g. deps (required)")
	op := fs.String("operation", "", "what happened, e.g. fetch (required)")
	content := fs.String("content", "", "the measurement, e.g. name@sha256:… ")
	contentFile := fs.String("content-file", "", "read the measurement from FILE instead")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *domain == "" || *op == "" {
		return fmt.Errorf("%w: --domain and --operation are required", errUsage)
	}
	data := []byte(*content)
	if *contentFile != "" {
		b, err := readInput(*contentFile)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		data = b
	}
	return e.call(ctx, "extend", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.Extend(ctx, &apiv1.ExtendRequest{Domain: *domain, Operation: *op, Content: data})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "event %d %s\n", resp.GetSeq(), shortDigest(resp.GetDigests()))
		return nil
	})
}

func (e *env) complete(ctx context.Context, args []string) error {
	fs := e.newFlagSet("complete")
	sf := newStepFlags(fs, "completion")
	var in, outp descriptorFlags
	fs.Var(&in.paths, "input", "an input file, hashed here (repeatable)")
	fs.Var(&in.jsonFiles, "inputs", "JSON array of in-toto resource descriptors of inputs (repeatable)")
	fs.Var(&outp.paths, "output", "an output file, hashed here (repeatable)")
	fs.Var(&outp.jsonFiles, "outputs", "JSON array of in-toto resource descriptors of outputs (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
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
	return e.call(ctx, "complete", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.Complete(ctx, &apiv1.CompleteRequest{BuildId: *sf.buildID, Inputs: inputs, Outputs: outputs, Nonce: nonce})
		if err != nil {
			return err
		}
		return e.writeOut(*sf.out, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), nil), "completion attestation")
	})
}

func (e *env) sign(ctx context.Context, args []string) error {
	fs := e.newFlagSet("sign")
	buildID := fs.String("build-id", "", "the build ID (required)")
	stFile := fs.String("statement", "", "in-toto Statement v1 JSON to sign, e.g. SLSA provenance (required; - for stdin)")
	out := fs.String("out", "", "write the DSSE envelope to FILE (default: stdout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *buildID == "" || *stFile == "" {
		return fmt.Errorf("%w: --build-id and --statement are required", errUsage)
	}
	st, err := readInput(*stFile)
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return e.call(ctx, "sign", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: *buildID, Statement: st})
		if err != nil {
			return err
		}
		return e.writeOut(*out, resp.GetEnvelope(), "signed statement")
	})
}

func (e *env) bundle(ctx context.Context, args []string) error {
	fs := e.newFlagSet("bundle")
	out := fs.String("out", "", "write the bundle (.intoto.jsonl) to FILE (default: stdout)")
	extra := fs.String("add", "", "also append the envelopes in FILE (e.g. statements signed elsewhere)")
	if err := parse(fs, args); err != nil {
		return err
	}
	var add []byte
	if *extra != "" {
		b, err := readInput(*extra)
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		add = b
	}
	return e.call(ctx, "bundle", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
		if err != nil {
			return err
		}
		jsonl := append(agent.BundleOf(resp).Encode(), add...)
		if *out == "" {
			_, err := e.stdout.Write(jsonl)
			return err
		}
		if err := os.WriteFile(*out, jsonl, 0o644); err != nil {
			return fmt.Errorf("write bundle: %w", err)
		}
		fmt.Fprintf(e.stderr, "bundle of %d attestations for build %q written to %s\n", len(resp.GetEnvelopes()), resp.GetBuildId(), *out)
		return nil
	})
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
