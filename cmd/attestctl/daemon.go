package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

const rpcTimeout = 30 * time.Second

// identityJSON is identity's --json output.
type identityJSON struct {
	KeyDigest              string   `json:"keyDigest"`
	PublicKey              string   `json:"publicKey"`
	Backends               []string `json:"backends"`
	Register               string   `json:"register"`
	Phase                  string   `json:"phase"`
	BuildID                string   `json:"buildId,omitempty"`
	Version                string   `json:"version"`
	LaunchAttestationBytes int      `json:"launchAttestationBytes"`
	LaunchAttestationFile  string   `json:"launchAttestationFile,omitempty"`
}

func (e *env) identityCmd() *cobra.Command {
	var asPEM, asJSON bool
	var out string
	var form *format
	cmd := &cobra.Command{
		Use:     "identity",
		GroupID: groupDaemon,
		Short:   "Print the environment key and the launch attestation",
		Long: `Print the environment's identity: the env key's SHA-256, the backends, the agent's
register, the lifecycle phase and build ID, and attestd's version.

--out also writes the launch attestation with the event log it names (JSON Lines), a file
that verifies on its own; attestd keeps the same in launch.intoto.jsonl in its runtime dir.

--json prints {"keyDigest", "publicKey" (PEM), "backends", "register", "phase", "buildId",
"version", "launchAttestationBytes", "launchAttestationFile"}.`,
		Example: `  attestctl identity
  attestctl identity --out launch.intoto.jsonl
  attestctl identity --pem > env-key.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.identity(cmd.Context(), asPEM, asJSON, out, form)
		},
	}
	cmd.Flags().BoolVar(&asPEM, "pem", false, "print only the env public key as PEM")
	cmd.Flags().StringVar(&out, "out", "", "also write the launch attestation to `FILE`")
	form = newFormat(cmd.Flags(), "format", "the launch attestation (--out)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the identity as JSON")
	cmd.MarkFlagsMutuallyExclusive("pem", "json")
	cmd.MarkFlagFilename("out")
	return cmd
}

func (e *env) identity(ctx context.Context, asPEM, asJSON bool, out string, form *format) error {
	var id *apiv1.GetIdentityResponse
	if err := e.call(ctx, "identity", func(ctx context.Context, c *apiv1.Client) (err error) {
		id, err = c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
		return err
	}); err != nil {
		return err
	}
	if out != "" {
		launch, err := form.encode(scai.AttestationLines(id.GetLaunchAttestation(), id.GetLaunchEventLog(), nil))
		if err != nil {
			return err
		}
		if err := os.WriteFile(out, launch, 0o644); err != nil {
			return fmt.Errorf("write launch attestation: %w", err)
		}
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: id.GetPublicKey()})
	switch {
	case asPEM:
		_, err := e.stdout.Write(keyPEM)
		return err
	case asJSON:
		return e.printJSON(identityJSON{KeyDigest: id.GetKeyDigest(), PublicKey: string(keyPEM), Backends: id.GetBackends(),
			Register: id.GetRegister(), Phase: id.GetPhase(), BuildID: id.GetBuildId(), Version: id.GetVersion(),
			LaunchAttestationBytes: len(id.GetLaunchAttestation()), LaunchAttestationFile: out})
	}
	fmt.Fprintf(e.stdout, "env key sha256:  %s\n", id.GetKeyDigest())
	fmt.Fprintf(e.stdout, "backends:        %v\n", id.GetBackends())
	fmt.Fprintf(e.stdout, "agent register:  %s\n", id.GetRegister())
	fmt.Fprintf(e.stdout, "phase:           %s %s\n", id.GetPhase(), id.GetBuildId())
	fmt.Fprintf(e.stdout, "attestd version: %s\n", id.GetVersion())
	fmt.Fprintf(e.stdout, "launch attestation: %d bytes%s\n", len(id.GetLaunchAttestation()), map[bool]string{true: ", written to " + out}[out != ""])
	return nil
}

func (e *env) attestCmd() *cobra.Command {
	var nonceHex, out string
	var asJSON bool
	var form *format
	cmd := &cobra.Command{
		Use:     "attest --nonce HEX [--out FILE]",
		GroupID: groupDaemon,
		Short:   "Get a fresh attestation bound to a verifier's nonce (admission)",
		Long: `Get a fresh attestation bound to the verifier's nonce, with the event log it names
(JSON Lines): it verifies on its own with attestctl verify --nonce HEX.

--json (with --out) prints {"file", "bytes", "sha256"} of the file written.`,
		Example: `  nonce=$(attestctl nonce)
  attestctl attest --nonce "$nonce" --out attestation.intoto.jsonl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := jsonNeedsOut(asJSON, out); err != nil {
				return err
			}
			nonce, err := parseNonce(nonceHex)
			if err != nil {
				return err
			}
			return e.call(cmd.Context(), "attest", func(ctx context.Context, c *apiv1.Client) error {
				resp, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
				if err != nil {
					return err
				}
				return e.writeAttestation(form, out, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), resp.GetInclusionProof()), "attestation", asJSON, nil)
			})
		},
	}
	cmd.Flags().StringVar(&nonceHex, "nonce", "", "the verifier's nonce, `HEX`, 1 to 64 bytes (required; attestctl nonce makes one)")
	cmd.Flags().StringVar(&out, "out", "", "write the attestation to `FILE` (default: stdout)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary of the file written (needs --out)")
	form = newFormat(cmd.Flags(), "format", "the attestation")
	cmd.MarkFlagRequired("nonce")
	cmd.MarkFlagFilename("out")
	return cmd
}

// logEventJSON is one event of log's --json output.
type logEventJSON struct {
	Seq      uint64            `json:"seq"`
	Register string            `json:"register"`
	Type     string            `json:"type"`
	Digests  map[string]string `json:"digests"`
	Data     any               `json:"data"`
}

func (e *env) logCmd() *cobra.Command {
	var out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "log [--out FILE]",
		GroupID: groupDaemon,
		Short:   "Print the agent's event log",
		Long: `Print the agent's event log: sequence number, register, event type, digest and data (a
storage event, the whole mount table, is summarized; --out has it all).

--json prints {"events": [{"seq", "register", "type", "digests", "data"}], "cel"}: data
is the event's JSON as measured (a string if it is not JSON), cel the file --out wrote.`,
		Example: `  attestctl log
  attestctl log --out agent.cel`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.eventLog(cmd.Context(), out, asJSON)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "also write the raw CEL (TLV) to `FILE`")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the events as JSON")
	cmd.MarkFlagFilename("out")
	return cmd
}

func (e *env) eventLog(ctx context.Context, out string, asJSON bool) error {
	return e.call(ctx, "log", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.GetEventLog(ctx, &apiv1.GetEventLogRequest{})
		if err != nil {
			return err
		}
		if out != "" {
			if err := os.WriteFile(out, resp.GetCel(), 0o644); err != nil {
				return fmt.Errorf("write event log: %w", err)
			}
		}
		if asJSON {
			evs := make([]logEventJSON, 0, len(resp.GetEvents()))
			for _, ev := range resp.GetEvents() {
				var data any = string(ev.GetData())
				if json.Valid(ev.GetData()) {
					data = json.RawMessage(ev.GetData())
				}
				evs = append(evs, logEventJSON{Seq: ev.GetSeq(), Register: ev.GetRegister(), Type: ev.GetType(), Digests: ev.GetDigests(), Data: data})
			}
			return e.printJSON(struct {
				Events []logEventJSON `json:"events"`
				CEL    string         `json:"cel,omitempty"`
			}{evs, out})
		}
		for _, ev := range resp.GetEvents() {
			data := ev.GetData()
			if ev.GetType() == measure.EventStorage.String() {
				data = []byte(storageSummary(data))
			}
			fmt.Fprintf(e.stdout, "%3d  %-6s %-10s %s  %s\n", ev.GetSeq(), ev.GetRegister(), ev.GetType(), shortDigest(ev.GetDigests()), data)
		}
		return nil
	})
}

func (e *env) nonceCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "nonce",
		GroupID: groupOffline,
		Short:   "Print a random 32-byte nonce (hex)",
		Long: `Print a random 32-byte nonce (hex), for attest --nonce, bind --nonce and verify --nonce.

--json prints {"nonce"}.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b := make([]byte, 32)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]string{"nonce": hex.EncodeToString(b)})
			}
			fmt.Fprintln(e.stdout, hex.EncodeToString(b))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the nonce as JSON")
	return cmd
}

func parseNonce(s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: --nonce is required (hex; `attestctl nonce` makes one)", errUsage)
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: --nonce: not hex: %v", errUsage, err)
	}
	if err := attest.CheckNonce(b); err != nil {
		return nil, fmt.Errorf("%w: --nonce: %v", errUsage, err)
	}
	return b, nil
}

// shortDigest shows the strongest digest of a set, abbreviated.
func shortDigest(ds map[string]string) string {
	for _, alg := range []string{"sha256", "sha384", "sha512", "sha1"} {
		if d, ok := ds[alg]; ok && len(d) >= 16 {
			return alg + ":" + d[:16] + "…"
		}
	}
	return "-"
}

// storageSummary shortens a storage event (the whole mount table) for the
// log table: the root, the writable mounts that are not kernel interfaces,
// and swap. The full data is in the CEL (--out) and in every attestation.
func storageSummary(data []byte) string {
	s, err := measure.ParseStorage(data)
	if err != nil {
		return string(data)
	}
	dev := func(d *measure.DeviceMeasurement) string {
		switch {
		case d == nil:
			return "?"
		case d.DM == nil:
			return d.Name
		case d.DM.Error != "":
			return d.DM.Name + " (table unreadable)"
		case len(d.DM.Targets) == 1 && d.DM.Targets[0].Type == "crypt":
			t := d.DM.Targets[0]
			return fmt.Sprintf("%s: crypt %s/%d", d.DM.Name, t.Cipher, t.KeyBits)
		case len(d.DM.Targets) == 1 && d.DM.Targets[0].Type == "verity":
			return fmt.Sprintf("%s: verity %s", d.DM.Name, shortHex(d.DM.Targets[0].RootDigest))
		}
		return d.DM.Name
	}
	var parts []string
	if r := s.MountOf("/"); r != nil && r.MountPoint == "/" {
		mode := "ro"
		if r.Writable {
			mode = "rw"
		}
		parts = append(parts, fmt.Sprintf("/ %s %s on %s", mode, r.FSType, dev(r.Device)))
	}
	var writable []string
	for _, m := range s.Mounts {
		if !m.Writable || m.Kind == measure.MountVirtual || m.MountPoint == "/" {
			continue
		}
		if m.Kind == measure.MountBlock {
			writable = append(writable, fmt.Sprintf("%s %s on %s", m.MountPoint, m.FSType, dev(m.Device)))
		} else {
			writable = append(writable, fmt.Sprintf("%s %s", m.MountPoint, m.FSType))
		}
	}
	parts = append(parts, "writable: "+strings.Join(writable, ", "))
	for _, sw := range s.Swaps {
		parts = append(parts, fmt.Sprintf("swap %s on %s", sw.Filename, dev(sw.Device)))
	}
	return fmt.Sprintf("%s (%d mounts in %s)", strings.Join(parts, "; "), len(s.Mounts), s.MountTable)
}

func shortHex(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
