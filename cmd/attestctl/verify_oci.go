package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/distribute"
	"github.com/attestd/attestd/distribute/oci"
	"github.com/attestd/attestd/verify"
)

// ociScheme prefixes verify's inputs that live in a registry.
const ociScheme = "oci://"

// ociFlags are the registry flags verify and push share.
type ociFlags struct {
	plainHTTP *bool
	// stderr gets a line per oci:// input read: what was pulled, and the
	// traffic it took.
	stderr io.Writer
	// pulled are the oci:// inputs read, by input name, for the subject
	// check after evaluation.
	pulled map[string]*ociInput
}

// ociInput is one oci:// input pulled: the referrers and the chain verify
// evaluates (DSSE form).
type ociInput struct {
	pulled *oci.Pulled
	lines  []byte
}

func newOCIFlags(fs *pflag.FlagSet, stderr io.Writer) *ociFlags {
	return &ociFlags{
		stderr:    stderr,
		plainHTTP: fs.Bool("plain-http", false, "talk plain HTTP to the registry; only a registry on a loopback address (localhost, 127.0.0.1, ::1) is allowed"),
		pulled:    map[string]*ociInput{},
	}
}

// open connects to the repository of ref with the flags' options and the
// Docker config file's credentials.
func (o *ociFlags) open(ref string) (*oci.Repository, error) {
	repo, err := oci.Open(ref, oci.Options{PlainHTTP: *o.plainHTTP})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return repo, nil
}

// read returns verify's input named name: a local file, or for
// oci://REPO@sha256:… the attestations attached to that manifest, pulled
// (buildID narrows them); either form (distribute.ChainInput).
func (o *ociFlags) read(ctx context.Context, name, buildID string) (verify.Input, error) {
	if !strings.HasPrefix(name, ociScheme) {
		raw, err := readInput(name)
		if err != nil {
			return verify.Input{}, fmt.Errorf("%w: %v", errUsage, err)
		}
		return distribute.ChainInput(name, raw), nil
	}
	ref, d, err := oci.ParseReference(name)
	if err != nil {
		return verify.Input{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	repo, err := o.open(ref)
	if err != nil {
		return verify.Input{}, err
	}
	p, err := repo.Pull(ctx, d, oci.Selector{BuildID: buildID})
	if err != nil {
		return verify.Input{}, pullError(err)
	}
	if len(p.Attestations) == 0 {
		return verify.Input{}, fmt.Errorf("%w: no attestd attestation refers to %s (%d attestation referrers listed)", errFailed, name, p.Listed)
	}
	st := repo.Stats()
	fmt.Fprintf(o.stderr, "%s: pulled %d attestation referrer(s) of %d listed: %d requests, %d bytes\n", name, len(p.Attestations), p.Listed, st.Requests, st.Bytes)
	in := distribute.ChainInput(name, p.Chain())
	o.pulled[name] = &ociInput{pulled: p, lines: in.Raw}
	return in, nil
}

// pullError classifies a failed pull: a registry that cannot be read is
// unreadable input (exit 2); content that is not what it claims is not
// verified (exit 1).
func pullError(err error) error {
	for _, bad := range []error{oci.ErrDigest, oci.ErrSubject, oci.ErrLayout, oci.ErrLimit, oci.ErrUnverified, oci.ErrNotOutput} {
		if errors.Is(err, bad) {
			return fmt.Errorf("%w: %v", errFailed, err)
		}
	}
	hint := ""
	if errors.Is(err, oci.ErrUnreachable) {
		hint = " (a registry without TLS on this machine needs --plain-http)"
	}
	return fmt.Errorf("%w: %v%s", errUsage, err, hint)
}

// check adds the subject check (oci.CheckSubject) to each oci:// input's
// report: the attestations verified describe the manifest asked about.
func (o *ociFlags) check(ev *verify.Evaluation) {
	for _, b := range ev.Bundles {
		in, ok := o.pulled[b.Name]
		if !ok {
			continue
		}
		addChainCheck(ev, b, in.pulled.SubjectCheck(in.lines))
	}
}

// addChainCheck appends c to a bundle's chain checks; a failed one fails
// the bundle, its level and the evaluation.
func addChainCheck(ev *verify.Evaluation, b *verify.BundleEvaluation, c attest.Check) {
	b.Report.Chain = append(b.Report.Chain, c)
	if c.OK {
		return
	}
	b.Report.OK, b.OK, b.Level, ev.OK = false, false, 0, false
}
