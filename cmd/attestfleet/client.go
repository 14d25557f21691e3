package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/attestd/attestd/fleet/api/v1"
	"github.com/attestd/attestd/internal/boundedfile"
	"github.com/attestd/attestd/internal/cmdline"
	"github.com/attestd/attestd/verify"
)

// The client commands call a running replica: look-ups for operators, and
// each step of the flow for scripts and the demo (docs/fleet.md, "Client
// commands").

// defaultServer is serve's default listen address, the client commands'
// default replica unless $ATTESTFLEET_SERVER names another.
const defaultServer = "unix:/run/attestfleet/attestfleet.sock"

// serverEnv names the client commands' default replica.
const serverEnv = "ATTESTFLEET_SERVER"

// callTimeout bounds one call.
const callTimeout = 2 * time.Minute

// maxBundleFile bounds a bundle read from a file: the client's message limit.
const maxBundleFile = fleetv1.MaxMessageSize

// conn is the flags every client command shares: where the replica is and
// how to reach it, and how to print.
type conn struct {
	server                       string
	tlsCA, tlsCert, tlsKey, name string
	asJSON                       bool
}

func (k *conn) flags(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringVar(&k.server, "server", "", "the replica's address `ADDR`: unix:/path or host:port (default $"+serverEnv+", else "+defaultServer+")")
	fs.StringVar(&k.tlsCA, "tls-ca", "", "TLS: verify the replica's certificate with the CAs in `PEM` (TLS is on with any --tls-* flag)")
	fs.StringVar(&k.tlsCert, "tls-cert", "", "TLS: client certificate `PEM` for mutual TLS (with --tls-key)")
	fs.StringVar(&k.tlsKey, "tls-key", "", "TLS: the client certificate's key `PEM`")
	fs.StringVar(&k.name, "tls-server-name", "", "TLS: the `NAME` the replica's certificate must hold (default: the host of --server)")
	fs.BoolVar(&k.asJSON, "json", false, "print the answer as JSON")
	for _, f := range []string{"tls-ca", "tls-cert", "tls-key"} {
		_ = cmd.MarkFlagFilename(f, "pem", "crt")
	}
}

// dial connects to the replica; a problem with the TLS files is a usage
// error of cmd.
func (k *conn) dial(cmd *cobra.Command) (*fleetv1.Client, error) {
	if k.server == "" {
		k.server = os.Getenv(serverEnv)
	}
	if k.server == "" {
		k.server = defaultServer
	}
	var opts []grpc.DialOption
	if k.tlsCA != "" || k.tlsCert != "" || k.tlsKey != "" || k.name != "" {
		cfg, err := k.tlsConfig()
		if err != nil {
			return nil, usage(cmd, err)
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	}
	return fleetv1.Dial(k.server, opts...)
}

func (k *conn) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, ServerName: k.name}
	if cfg.ServerName == "" && !strings.HasPrefix(k.server, "unix:") {
		cfg.ServerName, _, _ = strings.Cut(k.server, ":")
	}
	if k.tlsCA != "" {
		raw, err := boundedfile.Read(k.tlsCA, maxConfigSize)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		certs, err := verify.ParsePEMCertificates(raw)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca %s: %w", k.tlsCA, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			cfg.RootCAs.AddCert(c)
		}
	}
	if (k.tlsCert == "") != (k.tlsKey == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if k.tlsCert != "" {
		c, err := tls.LoadX509KeyPair(k.tlsCert, k.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return cfg, nil
}

// call dials, runs f with a bounded context, and turns a refusal into a
// refusalError.
func (k *conn) call(cmd *cobra.Command, f func(context.Context, *fleetv1.Client) error) error {
	c, err := k.dial(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
	defer cancel()
	if err := f(ctx, c); err != nil {
		if _, ok := status.FromError(err); ok {
			return &refusalError{err: err}
		}
		return err
	}
	return nil
}

// refusalError is the replica's answer when it is not a success: printed as
// "refused: REASON: message" (or the gRPC code when the replica gave no
// reason, e.g. unreachable).
type refusalError struct{ err error }

func (e *refusalError) Error() string {
	st, _ := status.FromError(e.err)
	if r := fleetv1.Reason(e.err); r != "" {
		msg := st.Message()
		if info := fleetv1.ErrorInfo(e.err); info.GetMetadata()["checks"] != "" {
			msg += " (failed checks: " + info.GetMetadata()["checks"] + ")"
		}
		return fmt.Sprintf("refused: %s: %s", r, msg)
	}
	return fmt.Sprintf("%s: %s", st.Code(), st.Message())
}

func (e *refusalError) Unwrap() error { return e.err }

// usage marks an error in cmd's command line found by the command itself.
func usage(cmd *cobra.Command, err error) error {
	return &cmdline.UsageError{Cmd: cmd.CommandPath(), Err: err}
}

// nonceValue is a 32-byte nonce flag in hex (as challenge and dispatch
// print it, and attestctl's --nonce takes it).
type nonceValue struct{ b []byte }

func (v *nonceValue) String() string { return hex.EncodeToString(v.b) }
func (v *nonceValue) Type() string   { return "HEX" }
func (v *nonceValue) Set(s string) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return errors.New("want 64 hex digits (a 32-byte nonce from attestfleet challenge)")
	}
	v.b = b
	return nil
}

// readBundle reads a bundle file ("-": stdin).
func readBundle(path string) ([]byte, error) {
	if path == "-" {
		path = "/dev/stdin"
	}
	b, err := boundedfile.Read(path, maxBundleFile)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return b, nil
}

// writeResult writes a signed result to path (if set); a missing result is
// an error, so a script never takes an empty file for one.
func writeResult(path, what string, b []byte) error {
	if path == "" {
		return nil
	}
	if len(b) == 0 {
		return fmt.Errorf("--out: the replica returned no %s", what)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}

// printJSON prints v as indented JSON.
func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable prints rows of (name, value), skipping empty values.
func (c *cli) printTable(rows [][2]string) error {
	w := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		if r[1] != "" {
			fmt.Fprintf(w, "%s\t%s\n", r[0], r[1])
		}
	}
	return w.Flush()
}

// when formats a timestamp for tables and JSON ("" when unset).
func when(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}
