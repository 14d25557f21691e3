package main

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	vsapb "github.com/in-toto/attestation/go/predicates/vsa/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/internal/boundedfile"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// maxResultFile bounds a signed result read from a file.
const maxResultFile = 16 << 20

func (c *cli) checkResultCommand() *cobra.Command {
	var key string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check-result --key PEM FILE",
		Short: "Check a signed result (VSA or SVR) against the service's result key",
		Long: `check-result checks the DSSE signature of a result the service signed (admit, confirm,
complete or get-* --out) with the public half of its result key (results.key; a PEM public
key, or the private key itself), and prints what it says: the predicate type, the subjects,
and the VSA's verificationResult and verifiedLevels or the SVR's properties. A signature that
does not verify, or a VSA that is not PASSED, exits 1. It calls no replica.

--json prints {"predicateType", "subjects", "verifier", "verificationResult",
"verifiedLevels", "properties"}.`,
		Example:           `  attestfleet check-result --key result-key.pub.pem build.vsa.json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := readPublicKey(key)
			if err != nil {
				return usage(cmd, fmt.Errorf("--key: %w", err))
			}
			c.Start()
			r, err := checkResult(args[0], pub)
			if err != nil {
				return err
			}
			if asJSON {
				err = c.printJSON(r)
			} else {
				err = c.printTable([][2]string{
					{"signature", "verified with the result key"}, {"predicate-type", r.PredicateType},
					{"subjects", strings.Join(r.Subjects, " ")}, {"verifier", r.Verifier},
					{"verification-result", r.VerificationResult}, {"verified-levels", strings.Join(r.VerifiedLevels, ",")},
					{"properties", strings.Join(r.Properties, ",")},
				})
			}
			if err == nil && r.PredicateType == verify.VSAPredicateType && r.VerificationResult != verify.VSAPassed {
				return fmt.Errorf("the VSA says %s", r.VerificationResult)
			}
			return err
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the service's result key, public (or private) `PEM` (required)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what the result says as JSON")
	markRequired(cmd, "key")
	_ = cmd.MarkFlagFilename("key", "pem")
	return cmd
}

// resultJSON is what check-result reports.
type resultJSON struct {
	PredicateType      string   `json:"predicateType"`
	Subjects           []string `json:"subjects"`
	Verifier           string   `json:"verifier,omitempty"`
	VerificationResult string   `json:"verificationResult,omitempty"`
	VerifiedLevels     []string `json:"verifiedLevels,omitempty"`
	Properties         []string `json:"properties,omitempty"`
}

// checkResult verifies the envelope in path with pub and reads its
// statement.
func checkResult(path string, pub crypto.PublicKey) (*resultJSON, error) {
	raw, err := boundedfile.Read(path, maxResultFile)
	if err != nil {
		return nil, err
	}
	env, err := scai.ParseEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := scai.VerifySignature(env, pub); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var st ita.Statement
	if err := protojson.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("%s: statement: %w", path, err)
	}
	r := &resultJSON{PredicateType: st.GetPredicateType()}
	for _, s := range st.GetSubject() {
		name := s.GetName()
		for alg, d := range s.GetDigest() {
			name += " " + alg + ":" + d
		}
		r.Subjects = append(r.Subjects, name)
	}
	pred, err := protojson.Marshal(st.GetPredicate())
	if err != nil {
		return nil, err
	}
	switch r.PredicateType {
	case verify.VSAPredicateType:
		var vsa vsapb.VerificationSummary
		if err := protojson.Unmarshal(pred, &vsa); err != nil {
			return nil, fmt.Errorf("%s: VSA: %w", path, err)
		}
		r.Verifier, r.VerificationResult, r.VerifiedLevels = vsa.GetVerifier().GetId(), vsa.GetVerificationResult(), vsa.GetVerifiedLevels()
	case verify.SVRPredicateType:
		svr, err := verify.DecodeSVR(pred)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		r.Verifier, r.Properties = svr.VerifierID, svr.Properties
	default:
		return nil, fmt.Errorf("%s: predicate type %q is neither a VSA nor an SVR", path, r.PredicateType)
	}
	return r, nil
}

// readPublicKey reads a PEM public key or certificate, or the private
// result key itself, and returns the public key.
func readPublicKey(path string) (crypto.PublicKey, error) {
	raw, err := boundedfile.Read(path, maxConfigSize)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(raw)
	switch {
	case b == nil:
		return nil, fmt.Errorf("%s: not PEM", path)
	case b.Type == "PUBLIC KEY":
		return x509.ParsePKIXPublicKey(b.Bytes)
	case b.Type == "CERTIFICATE":
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		return cert.PublicKey, nil
	}
	k, err := readSigningKey(path)
	if err != nil {
		return nil, err
	}
	return k.Public(), nil
}
