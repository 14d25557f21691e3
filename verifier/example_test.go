package verifier_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/verifier"
	"github.com/attestd/attestd/verify"
)

// A control plane embeds the verifier: one policy, set up once (from a file
// here; it can as well be built in code), then a call per bundle an
// environment sends. The bundle is a real one: a measured boot under QEMU +
// OVMF + swtpm, admitted, dispatched to one build and completed.
func Example() {
	dir := filepath.Join("..", "verify", "testdata", "e2e")
	policy := verify.NewPolicy()
	policy.Trust.TPM.PinnedAKs = []string{"ak.pem"}      // from attestctl register
	policy.Reference.File = "reference.intoto.json"      // signed at image bake
	policy.Reference.Keys = []string{"bake-key.pub.pem"} // the bake key
	policy.Build.ID = "e2e-good-1796049675"              // what the control plane dispatched
	policy.Require.Purposes = []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete}
	if err := policy.Seal(); err != nil {
		log.Fatal(err)
	}
	if err := policy.ResolveIn(dir); err != nil {
		log.Fatal(err)
	}
	v, err := verifier.New(policy, verifier.Config{})
	if err != nil {
		log.Fatal(err)
	}

	bundle, err := os.ReadFile(filepath.Join(dir, "bundle.intoto.jsonl"))
	if err != nil {
		log.Fatal(err)
	}
	ev := v.Evaluate([]verify.Input{{Name: "runner-0042", Raw: bundle}})
	b := ev.Bundles[0]
	fmt.Printf("verified: %v, SLSA BuildEnv level %d, failed checks: %d\n", ev.OK, b.Level, len(ev.Failed()))

	// The verification result to sign and hand on: a VSA for the build's
	// outputs (an SVR for an admission or a dispatch).
	kind, _, err := verify.ResultStatement(ev, b, verify.ResultOptions{
		VerifierID: "https://ci.example/verifier",
		PolicyURI:  "https://ci.example/policies/runners.yaml",
		Time:       time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(kind)
	// Output:
	// verified: true, SLSA BuildEnv level 2, failed checks: 0
	// https://slsa.dev/verification_summary/v1
}
