package verify_test

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

func TestVSA(t *testing.T) {
	f := getFixtures(t)
	e := f.snp
	p := parsePolicy(t, "version: 1\ntrust: {snp: {measurements: ['"+hex.EncodeToString(snpMeasurement(t, e))+"']}}\n")
	tp := withPolicy(e, p)
	ev := verify.Evaluate(tp.policy, tp.inputs, tp.opts, time.Time{})
	if !ev.OK {
		t.Fatalf("not verified: %v", failedChecks(ev))
	}
	st, err := verify.NewVSA(ev, ev.Bundles[0], verify.VSAOptions{VerifierID: "https://attestd.dev/attestctl", Version: "test", PolicyURI: "policy.yaml", Time: teeNow})
	if err != nil {
		t.Fatal(err)
	}
	key := otherKey()
	signed, err := verify.SignVSA(context.Background(), key, st)
	if err != nil {
		t.Fatal(err)
	}
	env, err := scai.ParseEnvelope(signed)
	if err != nil {
		t.Fatal(err)
	}
	if err := scai.VerifySignature(env, crypto.PublicKey(key.Public())); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(env.Payload)
	var got struct {
		Subject []struct {
			Name   string            `json:"name"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		PredicateType string `json:"predicateType"`
		Predicate     struct {
			Verifier struct {
				ID      string            `json:"id"`
				Version map[string]string `json:"version"`
			} `json:"verifier"`
			ResourceURI        string   `json:"resourceUri"`
			VerificationResult string   `json:"verificationResult"`
			VerifiedLevels     []string `json:"verifiedLevels"`
			Policy             struct {
				Digest map[string]string `json:"digest"`
			} `json:"policy"`
			InputAttestations []struct {
				Digest map[string]string `json:"digest"`
			} `json:"inputAttestations"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatal(err)
	}
	pr := got.Predicate
	if got.PredicateType != verify.VSAPredicateType || pr.VerificationResult != "PASSED" ||
		!slices.Equal(pr.VerifiedLevels, []string{"SLSA_BUILDENV_LEVEL_1", "SLSA_BUILDENV_LEVEL_2", "SLSA_BUILDENV_LEVEL_3"}) ||
		pr.Verifier.Version["attestctl"] != "test" || pr.Policy.Digest["sha256"] != ev.PolicySHA256 ||
		pr.InputAttestations[0].Digest["sha256"] != ev.Bundles[0].SHA256 ||
		len(got.Subject) != 1 || got.Subject[0].Name != "app.bin" {
		t.Errorf("VSA %s", payload)
	}
	// A failed evaluation gives FAILED and no levels.
	tp.opts.BuildID = "another-build"
	ev = verify.Evaluate(tp.policy, tp.inputs, tp.opts, time.Time{})
	st, err = verify.NewVSA(ev, ev.Bundles[0], verify.VSAOptions{VerifierID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var failed struct {
		Predicate struct {
			VerificationResult string   `json:"verificationResult"`
			VerifiedLevels     []string `json:"verifiedLevels"`
		} `json:"predicate"`
	}
	json.Unmarshal(st, &failed)
	if failed.Predicate.VerificationResult != "FAILED" || len(failed.Predicate.VerifiedLevels) != 0 {
		t.Errorf("failed VSA %s", st)
	}
}
