package robust

import (
	"crypto"
	"strings"
	"syscall"
	"testing"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/internal/tpmfault"
)

// TestCorruptPCRReadAtStart corrupts a TPM2_PCR_Read response where
// attestd still reads PCRs: when it starts (the agent register, to replay
// its log; the quoted PCRs the first quote does not find kept). Serving, an
// attestation is one TPM2_Quote and nothing is read back
// (attest/tpm/pcrs.go), so TestTPMFaults has no such case. It starts on a
// fresh TPM (launched) and restarts within the boot with a build bound
// (dispatched). The daemon either refuses to start, exiting non-zero with a
// last line naming why, and starts once the TPM answers properly again; or
// it serves, and its launch attestation and a fresh admission verify. Never
// an attestation that does not verify, never a hang.
func TestCorruptPCRReadAtStart(t *testing.T) {
	base := swtpmtest.StartTPM(t)
	binaries(t)
	for _, phase := range []string{launched, dispatched} {
		t.Run(phase, func(t *testing.T) {
			t.Parallel()
			sw := base.Clone(t)
			p := tpmfault.Start(t, sw.Socket)
			o := daemonOpts{device: "unix:" + p.Socket(), dir: shortDir(t), tpmTimeout: tpmTimeout}
			var ak crypto.PublicKey
			var keyDigest string
			if phase == dispatched {
				ak, keyDigest = bindThenStop(t, o)
			}

			hitc := p.Next(tpmfault.Corrupt.On(tpmfault.CCPCRRead))
			d := startDaemon(t, o)
			id, err := d.waitServing(startBound)
			select {
			case hit := <-hitc:
				t.Logf("fault %v", hit)
			case <-time.After(exitBound):
				t.Fatalf("the start made no TPM2_PCR_Read (served: %v)", err)
			}
			outcome := "served"
			if err != nil {
				if !d.hasExited() {
					t.Fatalf("start with a corrupted TPM2_PCR_Read: %v", err)
				}
				if d.exitCode() == 0 || !strings.HasPrefix(d.lastLine(), "attestd: ") {
					t.Errorf("start refused: exit %v, last line %q; want non-zero and a line naming the reason", d.state, d.lastLine())
				}
				outcome = "refused (" + d.lastLine() + "), then served"
				p.Heal()
				d = startDaemon(t, o)
				if id, err = d.waitServing(startBound); err != nil {
					t.Fatalf("start after the refusal, the TPM answering properly: %v\n%s", err, d.log.tail(30))
				}
			}
			if ak == nil {
				// Trust on first use: the quote, the PCR values and the log
				// must still agree under this AK.
				if ak, err = pinAK(id.GetLaunchAttestation()); err != nil {
					t.Fatalf("pin AK: %v", err)
				}
			}
			if keyDigest != "" && id.GetKeyDigest() != keyDigest {
				t.Errorf("env key %s after the restart, %s before", id.GetKeyDigest(), keyDigest)
			}
			if want := map[string]string{launched: "", dispatched: faultBuildID}[phase]; id.GetBuildId() != want {
				t.Errorf("build ID %q, want %q", id.GetBuildId(), want)
			}
			if err := checkLaunch(attestationLines(id.GetLaunchAttestation(), id.GetLaunchEventLog(), nil), verifyOpts(ak)); err != nil {
				t.Errorf("%s: %v", outcome, err)
			}
			ctx, cancel := rpcCtx()
			defer cancel()
			nonce := []byte("admission after a corrupted PCR read")
			r, err := d.client.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
			if err != nil {
				t.Fatalf("%s: Attest: %v", outcome, err)
			}
			opts := verifyOpts(ak)
			opts.Nonces = map[attest.Purpose][]byte{attest.PurposeAttest: nonce}
			if err := checkEnvelope(attestationLines(r.GetEnvelope(), r.GetEventLog(), r.GetInclusionProof()), opts); err != nil {
				t.Errorf("%s: Attest: %v", outcome, err)
			}
			d.signal(syscall.SIGTERM)
			if !d.waitExit(exitBound) || d.exitCode() != 0 {
				t.Errorf("SIGTERM: exited %v", d.state)
			}
			t.Log(outcome)
		})
	}
}

// bindThenStop starts attestd, pins its AK, binds a build and checks the
// dispatch attestation, then stops it with SIGTERM. It returns the AK and
// the env key digest.
func bindThenStop(t *testing.T, o daemonOpts) (crypto.PublicKey, string) {
	t.Helper()
	d := startDaemon(t, o)
	id := d.mustServe()
	ak, err := pinAK(id.GetLaunchAttestation())
	if err != nil {
		t.Fatalf("pin AK: %v", err)
	}
	ctx, cancel := rpcCtx()
	defer cancel()
	r, err := d.client.BindBuild(ctx, bindRequest(faultBuildID, dispatchNonce))
	if err != nil {
		t.Fatalf("BindBuild: %v", err)
	}
	opts := verifyOpts(ak)
	opts.Nonces = map[attest.Purpose][]byte{attest.PurposeDispatch: dispatchNonce}
	if err := checkEnvelope(attestationLines(r.GetEnvelope(), r.GetEventLog(), nil), opts); err != nil {
		t.Fatalf("dispatch: %v", err)
	}
	d.signal(syscall.SIGTERM)
	if !d.waitExit(exitBound) || d.exitCode() != 0 {
		t.Fatalf("SIGTERM before the restart: exited %v", d.state)
	}
	return ak, id.GetKeyDigest()
}
