package robust

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// drive takes the build through its lifecycle from wherever it is. Each
// step is an RPC that our kill may cut short (errKilled). What the daemon
// returns is checked after the start ends (driveResult.checks), so that
// the kill window is spent in the daemon, not in the test's verifier. If
// verifyFinal, it ends by fetching the final bundle and event log.
func (e *crashEnv) drive(d *daemon, id *apiv1.GetIdentityResponse, r *startRun, verifyFinal bool) driveResult {
	dr := &driver{e: e, c: d.client, at: r.at, opts: verifyOpts(e.ak)}
	phase := id.GetPhase()
	steps := []func() error{dr.logSoFar, dr.admission}
	if phase != "completed" {
		steps = append(steps, dr.bind)
	}
	steps = append(steps, dr.secondBuild)
	if phase != "completed" {
		steps = append(steps, dr.extends)
	}
	steps = append(steps, dr.finish)
	if verifyFinal {
		steps = append(steps, dr.final)
	}
	for _, f := range steps {
		if err := f(); err != nil {
			if r.killed.Load() {
				err = errKilled
			}
			return driveResult{err: err, checks: dr.checks}
		}
	}
	return driveResult{final: verifyFinal, checks: dr.checks}
}

// driver is one start's lifecycle driver.
type driver struct {
	e      *crashEnv
	c      *apiv1.Client
	at     func(step string, n int) // the step about to run
	opts   verify.Options
	checks []func() error
}

// later queues a check of something the daemon returned.
func (dr *driver) later(what string, f func() error) {
	dr.checks = append(dr.checks, func() error {
		if err := f(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}

// checkLater queues the verification of an attestation (attestationLines)
// for purpose.
func (dr *driver) checkLater(what string, lines []byte, purpose attest.Purpose, nonce []byte) {
	o := dr.opts
	o.Nonces = map[attest.Purpose][]byte{purpose: nonce}
	dr.later(what, func() error { return checkEnvelope(lines, o) })
}

// logSoFar: one build at most, the launch measured once.
func (dr *driver) logSoFar() error {
	dr.at("log", 0)
	recs, err := eventLog(dr.c)
	if err != nil {
		return err
	}
	dr.later("event log", func() error { return dr.e.checkLog(recs, false) })
	return nil
}

// admission: a fresh attestation for a verifier's nonce.
func (dr *driver) admission() error {
	dr.at("attest", 0)
	nonce := []byte("admission " + time.Now().Format(time.RFC3339Nano))
	ctx, cancel := rpcCtx()
	defer cancel()
	r, err := dr.c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
	if err != nil {
		return fmt.Errorf("Attest: %w", err)
	}
	dr.checkLater("admission", attestationLines(r.GetEnvelope(), r.GetEventLog(), r.GetInclusionProof()), attest.PurposeAttest, nonce)
	return nil
}

// bind dispatches the build, or again after a restart: the same build ID
// and request return (or re-make) the dispatch attestation.
func (dr *driver) bind() error {
	e := dr.e
	dr.at("bind", 0)
	e.bindSent = true
	ctx, cancel := rpcCtx()
	defer cancel()
	r, err := dr.c.BindBuild(ctx, bindRequest(e.buildID(), e.nonce("dispatch")))
	if err != nil {
		return fmt.Errorf("BindBuild: %w", err)
	}
	e.bound = true
	dr.checkLater("dispatch", attestationLines(r.GetEnvelope(), r.GetEventLog(), nil), attest.PurposeDispatch, e.nonce("dispatch"))
	return nil
}

// secondBuild: once bound, another build ID is refused.
func (dr *driver) secondBuild() error {
	if !dr.e.bound {
		return nil
	}
	dr.at("second-build", 0)
	ctx, cancel := rpcCtx()
	defer cancel()
	_, err := dr.c.BindBuild(ctx, bindRequest(dr.e.buildID()+"-second", nil))
	if status.Code(err) != codes.FailedPrecondition {
		return fmt.Errorf("SECOND BUILD: BindBuild of another build ID: %v; want FailedPrecondition", err)
	}
	return nil
}

// extends records runtime measurements until the log holds crashExtends.
func (dr *driver) extends() error {
	dr.at("log", 0)
	recs, err := eventLog(dr.c)
	if err != nil {
		return err
	}
	n := 0
	for _, r := range recs {
		if r.Type == measure.EventRuntime {
			n++
		}
	}
	for ; n < crashExtends; n++ {
		dr.at(fmt.Sprintf("extend %d", n+1), n+1)
		ctx, cancel := rpcCtx()
		_, err := dr.c.Extend(ctx, &apiv1.ExtendRequest{Domain: "build", Operation: "step", Content: []byte(fmt.Sprintf("step %d", n+1))})
		cancel()
		if err != nil {
			return fmt.Errorf("Extend %d: %w", n+1, err)
		}
	}
	return nil
}

// finish completes the build (again, if the completion attestation was lost
// in a crash) and signs its provenance, unless done before. The bundle so
// far must verify.
func (dr *driver) finish() error {
	e := dr.e
	dr.at("bundle", 0)
	b, err := getBundle(dr.c)
	if err != nil {
		return err
	}
	dr.later("bundle so far", func() error { _, err := e.checkBundle(bundleLines(b), dr.opts); return err })
	complete, signed := purposes(b.GetEnvelopes())
	if complete == 0 {
		dr.at("complete", 0)
		ctx, cancel := rpcCtx()
		defer cancel()
		r, err := dr.c.Complete(ctx, completeRequest(e.buildID(), e.nonce("complete")))
		if err != nil {
			return fmt.Errorf("Complete: %w", err)
		}
		dr.checkLater("completion", attestationLines(r.GetEnvelope(), r.GetEventLog(), nil), attest.PurposeComplete, e.nonce("complete"))
	}
	if signed > 0 {
		return nil
	}
	dr.at("sign", 0)
	ctx, cancel := rpcCtx()
	defer cancel()
	if _, err := dr.c.SignStatement(ctx, &apiv1.SignStatementRequest{BuildId: e.buildID(), Statement: provenance(e.buildID())}); err != nil {
		return fmt.Errorf("SignStatement: %w", err)
	}
	return nil
}

// final fetches the final bundle and event log: the bundle must verify as a
// consumer checks it, with one completion and the signed provenance, and
// the log must show the restart.
func (dr *driver) final() error {
	dr.at("final", 0)
	b, err := getBundle(dr.c)
	if err != nil {
		return err
	}
	recs, err := eventLog(dr.c)
	if err != nil {
		return err
	}
	dr.later("final bundle", func() error {
		if _, err := dr.e.checkBundle(bundleLines(b), dr.opts); err != nil {
			return err
		}
		if complete, signed := purposes(b.GetEnvelopes()); complete != 1 || signed == 0 {
			return fmt.Errorf("%d completions, %d signed statements", complete, signed)
		}
		return dr.e.checkLog(recs, true)
	})
	return nil
}

func getBundle(c *apiv1.Client) (*apiv1.GetBundleResponse, error) {
	ctx, cancel := rpcCtx()
	defer cancel()
	b, err := c.GetBundle(ctx, &apiv1.GetBundleRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetBundle: %w", err)
	}
	return b, nil
}

// checkBundle verifies a bundle of this environment as a consumer would.
func (e *crashEnv) checkBundle(jsonl []byte, opts verify.Options) (*verify.Report, error) {
	opts.BuildID = e.buildID()
	opts.Nonces = map[attest.Purpose][]byte{attest.PurposeDispatch: e.nonce("dispatch"), attest.PurposeComplete: e.nonce("complete")}
	return checkBundle(jsonl, opts)
}

// purposes counts, without verifying, the completions and the signed
// statements (non-SCAI envelopes) of a bundle.
func purposes(envs [][]byte) (complete, signed int) {
	for _, raw := range envs {
		env, err := scai.ParseEnvelope(raw)
		if err != nil {
			continue
		}
		op, err := scai.Open(env)
		switch {
		case errors.Is(err, scai.ErrPredicateType):
			signed++
		case err == nil && op.Attestation.Purpose == attest.PurposeComplete:
			complete++
		}
	}
	return complete, signed
}

func eventLog(c *apiv1.Client) ([]measure.Record, error) {
	ctx, cancel := rpcCtx()
	defer cancel()
	l, err := c.GetEventLog(ctx, &apiv1.GetEventLogRequest{})
	if err != nil {
		return nil, fmt.Errorf("GetEventLog: %w", err)
	}
	recs, err := measure.ParseCEL(l.GetCel())
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	return recs, nil
}

// checkLog checks an event log: the launch measured once (no launch event
// repeated, one separator), at most one build ID and only ours, and
// (final) a restart recorded.
func (e *crashEnv) checkLog(recs []measure.Record, final bool) error {
	seen := map[string]bool{}
	var separators, buildIDs, restarts int
	for _, r := range recs {
		switch r.Type {
		case measure.EventSeparator:
			separators++
		case measure.EventBuildID:
			buildIDs++
			if !bytes.Contains(r.Data, []byte(`"`+e.buildID()+`"`)) {
				return fmt.Errorf("SECOND BUILD: build-id event %s; only %q was requested", r.Data, e.buildID())
			}
		case measure.EventRestart:
			restarts++
		}
		if separators == 0 && r.Type != measure.EventSeparator {
			k := r.Type.String() + string(r.Data)
			if seen[k] {
				return fmt.Errorf("launch measured twice: a second %s event before the separator (record %d)", r.Type, r.Seq)
			}
			seen[k] = true
		}
	}
	switch {
	case separators != 1:
		return fmt.Errorf("event log has %d separators; want 1", separators)
	case buildIDs > 1:
		return fmt.Errorf("SECOND BUILD: %d build-id events in the event log", buildIDs)
	case final && restarts == 0:
		return errors.New("final event log shows no restart")
	}
	return nil
}
