package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

const rpcTimeout = 30 * time.Second

func (e *env) identity(ctx context.Context, args []string) error {
	fs := e.newFlagSet("identity")
	asPEM := fs.Bool("pem", false, "print only the env public key as PEM")
	out := fs.String("out", "", "also write the launch attestation to FILE")
	if err := parse(fs, args); err != nil {
		return err
	}
	var id *apiv1.GetIdentityResponse
	if err := e.call(ctx, "identity", func(ctx context.Context, c *apiv1.Client) (err error) {
		id, err = c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
		return err
	}); err != nil {
		return err
	}
	if *out != "" {
		if err := os.WriteFile(*out, scai.AttestationLines(id.GetLaunchAttestation(), id.GetLaunchEventLog(), nil), 0o644); err != nil {
			return fmt.Errorf("write launch attestation: %w", err)
		}
	}
	if *asPEM {
		return pem.Encode(e.stdout, &pem.Block{Type: "PUBLIC KEY", Bytes: id.GetPublicKey()})
	}
	fmt.Fprintf(e.stdout, "env key sha256:  %s\n", id.GetKeyDigest())
	fmt.Fprintf(e.stdout, "backends:        %v\n", id.GetBackends())
	fmt.Fprintf(e.stdout, "agent register:  %s\n", id.GetRegister())
	fmt.Fprintf(e.stdout, "phase:           %s %s\n", id.GetPhase(), id.GetBuildId())
	fmt.Fprintf(e.stdout, "attestd version: %s\n", id.GetVersion())
	fmt.Fprintf(e.stdout, "launch attestation: %d bytes%s\n", len(id.GetLaunchAttestation()), map[bool]string{true: ", written to " + *out}[*out != ""])
	return nil
}

func (e *env) attest(ctx context.Context, args []string) error {
	fs := e.newFlagSet("attest")
	nonceHex := fs.String("nonce", "", "the verifier's nonce, hex, 1 to 64 bytes (required)")
	out := fs.String("out", "", "write the attestation to FILE (default: stdout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	nonce, err := parseNonce(*nonceHex)
	if err != nil {
		return err
	}
	return e.call(ctx, "attest", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
		if err != nil {
			return err
		}
		return e.writeOut(*out, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), resp.GetInclusionProof()), "attestation")
	})
}

func (e *env) eventLog(ctx context.Context, args []string) error {
	fs := e.newFlagSet("log")
	out := fs.String("out", "", "also write the raw CEL (TLV) to FILE")
	if err := parse(fs, args); err != nil {
		return err
	}
	return e.call(ctx, "log", func(ctx context.Context, c *apiv1.Client) error {
		resp, err := c.GetEventLog(ctx, &apiv1.GetEventLogRequest{})
		if err != nil {
			return err
		}
		if *out != "" {
			if err := os.WriteFile(*out, resp.GetCel(), 0o644); err != nil {
				return fmt.Errorf("write event log: %w", err)
			}
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

func (e *env) nonce(args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("%w: nonce takes no arguments", errUsage)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, hex.EncodeToString(b))
	return nil
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
