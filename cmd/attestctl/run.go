package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1
	exitUsage    = 2
	usageSummary = `usage: attestctl [--socket PATH] COMMAND [flags]

commands talking to attestd:
  identity [--pem]                 the environment key and launch attestation
  attest --nonce HEX [--out FILE]  a fresh attestation bound to a nonce
  log                              the agent's event log
  bind --build-id ID [--request FILE] [--nonce HEX]      dispatch: bind this environment to one build
  extend --domain D --operation O [--content S]          record a runtime measurement
  complete --build-id ID --output PATH... [--input PATH...]  completion: bind inputs and outputs
  sign --build-id ID --statement FILE                    sign the build's provenance with the env key
  bundle [--out FILE]                                    all attestations of this environment (.intoto.jsonl)
  register --ek-roots PEM [--out FILE]                   pin the AK by credential activation against the EK certificate

commands working offline:
  verify [flags] FILE              verify an attestation or a .intoto.jsonl bundle
                                   (--nonce [PURPOSE=]HEX repeatable, --build-id ID)
  export-ak FILE                   print the AK public key (PEM) from an attestation
  reference --root DIR --uki FILE --key PEM   reference values of a baked image (signed)
  verify-image --key PEM --provenance FILE ARTIFACT...   check image files against the bake's signed SLSA provenance
  nonce                            print a random 32-byte nonce (hex)
`
)

// errUsage marks bad usage (exit 2); errFailed a negative answer (exit 1).
var (
	errUsage  = errors.New("usage")
	errFailed = errors.New("NOT VERIFIED")
)

type env struct {
	socket string
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time // appraisal clock; nil means time.Now (tests set it)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("attestctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageSummary) }
	fs.StringVar(&e.socket, "socket", defaultSocket(), "attestd socket")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	var err error
	switch cmd {
	case "identity":
		err = e.identity(ctx, rest)
	case "attest":
		err = e.attest(ctx, rest)
	case "log":
		err = e.eventLog(ctx, rest)
	case "bind":
		err = e.bind(ctx, rest)
	case "extend":
		err = e.extend(ctx, rest)
	case "complete":
		err = e.complete(ctx, rest)
	case "sign":
		err = e.sign(ctx, rest)
	case "bundle":
		err = e.bundle(ctx, rest)
	case "register":
		err = e.register(ctx, rest)
	case "reference":
		err = e.reference(rest)
	case "verify":
		err = e.verify(rest)
	case "verify-image":
		err = e.verifyImage(rest)
	case "export-ak":
		err = e.exportAK(rest)
	case "nonce":
		err = e.nonce(rest)
	case "help":
		fs.Usage()
		return exitOK
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "attestctl:", err)
		return exitUsage
	default:
		fmt.Fprintln(stderr, "attestctl:", err)
		return exitFailed
	}
}

func defaultSocket() string {
	if d := os.Getenv("ATTESTD_SOCKET"); d != "" {
		return d
	}
	return apiv1.DefaultSocket
}

// newFlagSet returns a subcommand flag set whose errors are usage errors.
func (e *env) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("attestctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func (e *env) dial() (*apiv1.Client, error) {
	c, err := apiv1.Dial(e.socket)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	return c, nil
}

// rpcError turns a gRPC error into one line naming the socket.
func (e *env) rpcError(method string, err error) error {
	msg := err.Error()
	if strings.Contains(msg, "connect: no such file") || strings.Contains(msg, "connection refused") {
		return fmt.Errorf("%s: attestd is not reachable at %s (is it running? --socket or $ATTESTD_SOCKET)", method, e.socket)
	}
	return fmt.Errorf("%s: %w", method, err)
}
