package verify

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"

	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// PurposeSignedStatement marks the Result of a statement the environment
// signed for the build (e.g. SLSA provenance) rather than an attestd
// attestation.
const PurposeSignedStatement attest.Purpose = "signed-statement"

// Bundle-level check names.
const (
	CheckChainMembers  = "chain-members"
	CheckChainEnvKey   = "chain-env-key"
	CheckChainBuildID  = "chain-build-id"
	CheckChainLog      = "chain-event-log"
	CheckSignedSubject = "statement-subjects"
)

// Report is the outcome for a bundle: the checks of the form it arrived in
// (Input.Form), each envelope's result, then the checks that tie them
// together.
type Report struct {
	Form    []attest.Check `json:"form,omitempty"`
	Results []*Result      `json:"attestations"`
	Chain   []attest.Check `json:"chain,omitempty"`
	OK      bool           `json:"verified"`
}

// Failed returns the names of every failed check.
func (rep *Report) Failed() []string {
	var out []string
	for _, c := range rep.Form {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	for _, r := range rep.Results {
		out = append(out, r.Failed()...)
	}
	for _, c := range rep.Chain {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// BundleReport verifies a bundle (.intoto.jsonl or a single envelope): each
// attestd attestation on its own, statements the environment signed for the
// build (e.g. SLSA provenance), and — when the bundle holds a build — the
// chain launch → dispatch → completion: one env key, one build ID, event
// logs that only grow, signed statements only about the build's outputs.
func BundleReport(raw []byte, opts Options) *Report {
	b, err := scai.DecodeBundle(raw)
	if err != nil {
		r := &Result{}
		r.add(CheckEnvelope, err, "")
		return &Report{Results: []*Result{r}}
	}
	m := MaterialOf(b)
	rep := &Report{}
	var signed []*dsse.Envelope
	var signedResults []*Result
	for _, env := range b.Envelopes {
		// Each envelope is opened once: as an attestd attestation, or, when
		// its predicate is another, as a statement the environment signed.
		if op, err := scai.Open(env); !errors.Is(err, scai.ErrPredicateType) {
			rep.Results = append(rep.Results, opened(env, op, err, m, opts))
			continue
		}
		r := &Result{Purpose: PurposeSignedStatement}
		rep.Results = append(rep.Results, r)
		signed = append(signed, env)
		signedResults = append(signedResults, r)
	}
	c := &chain{rep: rep}
	c.check(opts)
	for i, env := range signed {
		c.checkSigned(env, signedResults[i])
	}
	rep.OK = len(rep.Failed()) == 0
	for _, r := range rep.Results {
		r.OK = len(r.Failed()) == 0 && len(r.Checks) > 0
		rep.OK = rep.OK && r.OK
	}
	return rep
}

// addForm records the checks of the bundle's form; a failed one fails the
// report.
func (rep *Report) addForm(checks []attest.Check) {
	rep.Form = checks
	for _, c := range checks {
		rep.OK = rep.OK && !c.Failed()
	}
}

type chain struct {
	rep                        *Report
	launch, dispatch, complete *Result
}

func (c *chain) add(name string, err error, detail string) {
	ch := attest.Check{Name: name, OK: err == nil, Detail: detail}
	if err != nil {
		ch.Detail = err.Error()
	}
	c.rep.Chain = append(c.rep.Chain, ch)
}

// check runs the chain checks if the bundle holds a build.
func (c *chain) check(opts Options) {
	var attestd []*Result
	count := map[attest.Purpose]int{}
	signed := 0
	for _, r := range c.rep.Results {
		if r.Purpose == PurposeSignedStatement {
			signed++
			continue
		}
		if r.att == nil {
			continue
		}
		attestd = append(attestd, r)
		count[r.Purpose]++
		switch r.Purpose {
		case attest.PurposeLaunch:
			c.launch = r
		case attest.PurposeDispatch:
			c.dispatch = r
		case attest.PurposeComplete:
			c.complete = r
		}
	}
	if count[attest.PurposeDispatch]+count[attest.PurposeComplete]+signed == 0 && len(attestd) <= 1 {
		return // a single attestation: nothing to chain
	}
	var problems []string
	if count[attest.PurposeLaunch] != 1 {
		problems = append(problems, fmt.Sprintf("%d launch attestations (want 1)", count[attest.PurposeLaunch]))
	}
	if count[attest.PurposeDispatch] > 1 || count[attest.PurposeComplete] > 1 {
		problems = append(problems, fmt.Sprintf("%d dispatch and %d completion attestations (at most 1 each: one build per environment)", count[attest.PurposeDispatch], count[attest.PurposeComplete]))
	}
	if c.complete != nil && c.dispatch == nil {
		problems = append(problems, "a completion without its dispatch")
	}
	if signed > 0 && c.complete == nil {
		problems = append(problems, "signed statements without a completion")
	}
	if len(problems) > 0 {
		c.add(CheckChainMembers, errors.New(strings.Join(problems, "; ")), "")
	} else {
		c.add(CheckChainMembers, nil, fmt.Sprintf("launch, %d admission(s), %d dispatch, %d completion, %d signed statement(s)",
			count[attest.PurposeAttest], count[attest.PurposeDispatch], count[attest.PurposeComplete], signed))
	}

	if len(attestd) == 0 {
		return // nothing opened: chain-members and the per-envelope checks say why
	}
	var keyErr error
	for _, r := range attestd {
		if r.KeyDigest != attestd[0].KeyDigest {
			keyErr = fmt.Errorf("%s attestation is by env key %s, the %s attestation by %s", r.Purpose, r.KeyDigest, attestd[0].Purpose, attestd[0].KeyDigest)
			break
		}
	}
	c.add(CheckChainEnvKey, keyErr, "every attestation is by env key "+attestd[0].KeyDigest)

	if c.dispatch != nil || c.complete != nil {
		var idErr error
		switch {
		case c.dispatch != nil && c.complete != nil && c.dispatch.BuildID != c.complete.BuildID:
			idErr = fmt.Errorf("dispatch is for build %q, completion for %q", c.dispatch.BuildID, c.complete.BuildID)
		case opts.BuildID != "" && c.buildID() != opts.BuildID:
			idErr = fmt.Errorf("the bundle is for build %q, expected %q", c.buildID(), opts.BuildID)
		}
		c.add(CheckChainBuildID, idErr, fmt.Sprintf("dispatch and completion agree on build %q", c.buildID()))
	}
	c.add(CheckChainLog, chainLogs(attestd), "each event log extends the one before it: the register only moved forward by logged events")
}

func (c *chain) buildID() string {
	if c.dispatch != nil {
		return c.dispatch.BuildID
	}
	if c.complete != nil {
		return c.complete.BuildID
	}
	return ""
}

// chainLogs: ordered by length, each attestation's event log must be a
// prefix of the next one's: one register history that only grew. (A launch
// attestation re-made after a daemon restart may come after the dispatch;
// its log then holds the restart event.)
func chainLogs(rs []*Result) error {
	logs := make([]*Result, 0, len(rs))
	for _, r := range rs {
		if len(r.Events) == 0 {
			return fmt.Errorf("the %s attestation has no readable event log", r.Purpose)
		}
		logs = append(logs, r)
	}
	slices.SortStableFunc(logs, func(a, b *Result) int { return len(a.log) - len(b.log) })
	for i := 1; i < len(logs); i++ {
		a, b := logs[i-1], logs[i]
		if !bytes.HasPrefix(b.log, a.log) {
			return fmt.Errorf("the %s attestation's event log (%d bytes) does not begin with the %s attestation's (%d bytes)", b.Purpose, len(b.log), a.Purpose, len(a.log))
		}
	}
	return nil
}

// checkSigned verifies a statement the environment signed for the build:
// DSSE by the chain's env key, and every subject among the completion's
// outputs.
func (c *chain) checkSigned(env *dsse.Envelope, r *Result) {
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	st := &ita.Statement{}
	if err == nil {
		err = protojson.Unmarshal(payload, st)
	}
	if err == nil {
		err = st.Validate()
	}
	if err == nil && env.PayloadType != scai.PayloadType {
		err = fmt.Errorf("payload type %q, want %q", env.PayloadType, scai.PayloadType)
	}
	if !r.add(CheckStatement, err, fmt.Sprintf("in-toto Statement v1, predicate %s", st.GetPredicateType())) {
		r.notChecked(CheckStatement, CheckSignature, CheckSignedSubject)
		return
	}
	if c.complete == nil || c.complete.att == nil {
		r.add(CheckSignature, fmt.Errorf("no completion attestation in the bundle names the signing env key"), "")
		r.notChecked(CheckSignature, CheckSignedSubject)
		return
	}
	key := c.complete.att.EnvKey
	if !r.add(CheckSignature, scai.VerifySignature(env, key), "DSSE envelope signed by the env key "+c.complete.KeyDigest[:16]+"…") {
		r.notChecked(CheckSignature, CheckSignedSubject)
		return
	}
	var subjErr error
	for i, s := range st.GetSubject() {
		if !scai.SubjectAmong(s, c.complete.att.Build.Outputs) {
			subjErr = fmt.Errorf("subject %d (%q, %v) is not among the completion's outputs", i, s.GetName(), s.GetDigest())
			break
		}
	}
	r.add(CheckSignedSubject, subjErr, fmt.Sprintf("all %d subjects are outputs of build %q", len(st.GetSubject()), c.complete.BuildID))
	r.BuildID = c.complete.BuildID
	r.KeyDigest = c.complete.KeyDigest
}
