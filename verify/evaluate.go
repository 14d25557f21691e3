package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// Input is one bundle to evaluate, named for reports.
type Input struct {
	Name string
	// Raw is the bundle in the DSSE form (.intoto.jsonl or one envelope).
	Raw []byte
	// Form are checks made while decoding the input from another form into
	// Raw (package distribute: Sigstore bundles); a failed one fails the
	// bundle. Report.Form holds them.
	Form []attest.Check
}

// Evaluation is the outcome of a policy over a set of bundles.
type Evaluation struct {
	PolicySHA256 string              `json:"policySha256"`
	Bundles      []*BundleEvaluation `json:"bundles"`
	Checks       []attest.Check      `json:"acrossBundles,omitempty"`
	OK           bool                `json:"verified"`
}

// BundleEvaluation is one bundle's report plus the policy's checks on it.
type BundleEvaluation struct {
	Name   string         `json:"name"`
	SHA256 string         `json:"sha256"`
	Report *Report        `json:"report"`
	Policy []attest.Check `json:"policy"`
	// Level is the SLSA BuildEnv level the bundle's evidence supports (0
	// when any check failed). See docs/verifying.md.
	Level int  `json:"buildEnvLevel"`
	OK    bool `json:"verified"`
}

// Failed names every failed check of the evaluation.
func (e *Evaluation) Failed() []string {
	var out []string
	for _, b := range e.Bundles {
		for _, n := range b.Failed() {
			out = append(out, b.Name+": "+n)
		}
	}
	for _, c := range e.Checks {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// Failed names the bundle's failed checks.
func (b *BundleEvaluation) Failed() []string {
	out := b.Report.Failed()
	for _, c := range b.Policy {
		if c.Failed() {
			out = append(out, c.Name)
		}
	}
	return out
}

// Config is what Evaluate needs besides the policy and the bundles.
type Config struct {
	// Verifiers are the backend evidence verifiers, set up with the policy's
	// trust section (package verifier builds them).
	Verifiers []attest.Verifier
	// Now is the appraisal time (freshness); zero means time.Now().
	Now time.Time
}

// Evaluate verifies each bundle, appraises it against the policy (every
// check of policyChecks that applies), and checks the bundles together. The
// policy must be resolved (Resolve, LoadPolicy) if it names files. Evaluate
// does no I/O and never panics on malformed input.
func Evaluate(p *Policy, inputs []Input, cfg Config) *Evaluation {
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	ev := &Evaluation{PolicySHA256: hex.EncodeToString(p.Digest[:]), OK: true}
	opts := p.options(cfg.Verifiers)
	for _, in := range inputs {
		d := sha256.Sum256(in.Raw)
		b := &BundleEvaluation{Name: in.Name, SHA256: hex.EncodeToString(d[:]), Report: BundleReport(in.Raw, opts)}
		b.Report.addForm(in.Form)
		p.appraise(b, cfg.Now)
		ev.Bundles = append(ev.Bundles, b)
		ev.OK = ev.OK && b.OK
	}
	if p.Build.OneBuild() {
		c := oneBuildPerEnvironment(ev.Bundles)
		ev.Checks = append(ev.Checks, c)
		ev.OK = ev.OK && !c.Failed()
	}
	return ev
}

// options are the per-attestation options the policy implies.
func (p *Policy) options(verifiers []attest.Verifier) Options {
	o := Options{
		Verifiers:               verifiers,
		BuildID:                 p.Build.ID,
		InsecureTrustEmbeddedAK: p.Trust.TPM.InsecureTrustEmbeddedAK,
		Nonces:                  map[attest.Purpose][]byte{},
	}
	for pu, n := range p.Freshness.Nonces {
		o.Nonces[pu] = n
	}
	if p.Resolved != nil {
		o.TrustedAKs, o.AKRoots = p.Resolved.TrustedAKs, p.Resolved.AKRoots
	}
	return o
}

// appraisal is one bundle under appraisal: what the policy checks see.
type appraisal struct {
	p   *Policy
	b   *BundleEvaluation
	rs  []*Result // the attestd attestations that opened
	now time.Time
	// refOK: the reference values were appraised on the launch prefix and
	// every reference check passed.
	refOK bool
}

// policyCheck is one check of the policy on a bundle: its name, whether
// the policy asks for it, and how it runs (the detail on success, or why it
// failed). A check about an attestation the bundle lacks fails.
type policyCheck struct {
	name    string
	applies func(*Policy) bool
	run     func(*appraisal) (string, error)
}

// policyChecks run in order; the level runs last as it depends on every
// check before it.
var policyChecks = []policyCheck{
	{CheckPolicyReference, func(p *Policy) bool { return p.Reference.File != "" }, (*appraisal).reference},
	{CheckPolicyRegisterValues, func(p *Policy) bool { return len(p.Reference.Registers) > 0 }, (*appraisal).registerValues},
	{CheckPolicyRegisters, func(p *Policy) bool { return len(p.Require.Registers) > 0 }, (*appraisal).registersCovered},
	{CheckPolicyAttributes, func(p *Policy) bool { return len(p.Require.Attributes) > 0 }, (*appraisal).attributes},
	{CheckPolicyBackends, func(p *Policy) bool { return len(p.Require.Backends) > 0 }, (*appraisal).backends},
	{CheckPolicyPurposes, func(p *Policy) bool { return len(p.Require.Purposes) > 0 }, (*appraisal).purposes},
	{CheckPolicyFirmwareLog, func(p *Policy) bool { return p.Require.FirmwareLog }, (*appraisal).firmwareLog},
	{CheckPolicySecureBoot, func(p *Policy) bool { return p.Require.SecureBoot }, (*appraisal).secureBoot},
	{CheckPolicyNonces, func(p *Policy) bool { return len(p.Freshness.Nonces) > 0 }, (*appraisal).nonces},
	{CheckPolicyFreshness, func(p *Policy) bool { return p.Freshness.MaxAge > 0 }, (*appraisal).maxAge},
	{CheckPolicyBuild, func(p *Policy) bool { return p.Build.ID != "" }, (*appraisal).build},
	{CheckPolicyRequest, func(p *Policy) bool { return len(p.Build.Request) > 0 }, (*appraisal).request},
	{CheckPolicyStorageRootVerity, func(p *Policy) bool { return p.Storage.RootVerity != nil }, (*appraisal).storageRootVerity},
	{CheckPolicyStorageEncrypted, func(p *Policy) bool { return p.Storage.EncryptedWritable }, (*appraisal).storageEncrypted},
	{CheckPolicyLevel, func(p *Policy) bool { return p.Require.Level > 0 }, (*appraisal).requiredLevel},
}

// Policy check names (per bundle, then across bundles).
const (
	CheckPolicyReference      = "policy-reference"
	CheckPolicyRegisterValues = "policy-register-values"
	CheckPolicyRegisters      = "policy-registers"
	CheckPolicyAttributes     = "policy-attributes"
	CheckPolicyBackends       = "policy-backends"
	CheckPolicyPurposes       = "policy-purposes"
	CheckPolicyFirmwareLog    = "policy-firmware-log"
	CheckPolicySecureBoot     = "policy-secure-boot"
	CheckPolicyNonces         = "policy-nonces"
	CheckPolicyFreshness      = "policy-max-age"
	CheckPolicyBuild          = "policy-build"
	CheckPolicyRequest        = "policy-build-request"
	CheckPolicyLevel          = "policy-level"
	CheckOneBuildPerEnv       = "one-build-per-environment"

	// The launch's storage measurement (storage: in the policy).
	CheckPolicyStorageRootVerity = "storage-root-verity"
	CheckPolicyStorageEncrypted  = "storage-encrypted"
)

// PolicyChecks names the policy's checks in the order they run.
func PolicyChecks() []string {
	out := make([]string, len(policyChecks))
	for i, c := range policyChecks {
		out[i] = c.name
	}
	return out
}

func (p *Policy) appraise(b *BundleEvaluation, now time.Time) {
	a := &appraisal{p: p, b: b, rs: attestdResults(b.Report), now: now}
	leveled := false
	for _, c := range policyChecks {
		if !c.applies(p) {
			continue
		}
		if c.name == CheckPolicyLevel {
			b.Level, leveled = a.level(), true
		}
		detail, err := c.run(a)
		ch := attest.Check{Name: c.name, OK: err == nil, Detail: detail}
		if err != nil {
			ch.Detail = err.Error()
		}
		b.Policy = append(b.Policy, ch)
	}
	if !leveled {
		b.Level = a.level()
	}
	b.OK = b.Report.OK && len(b.Failed()) == 0
}

// attestdResults returns the results that are attestd attestations that
// opened.
func attestdResults(rep *Report) []*Result {
	var out []*Result
	for _, r := range rep.Results {
		if r.att != nil {
			out = append(out, r)
		}
	}
	return out
}

func findPurpose(rs []*Result, p attest.Purpose) *Result {
	for _, r := range rs {
		if r.Purpose == p {
			return r
		}
	}
	return nil
}

// eachResult applies f to every attestd attestation; the first error wins.
func eachResult(rs []*Result, f func(*Result) error) error {
	if len(rs) == 0 {
		return fmt.Errorf("the bundle holds no attestd attestation that opened")
	}
	for _, r := range rs {
		if err := f(r); err != nil {
			return err
		}
	}
	return nil
}

// attributes are the SCAI attribute names an attestation asserts.
func attributes(a *scai.Attestation) map[string]bool {
	m := map[string]bool{scai.AttrPurposePrefix + string(a.Purpose): true, scai.AttrEnvKey: true}
	if a.Build != nil {
		m[scai.AttrBuildRequest] = len(a.Build.Request) > 0
		m[scai.AttrBuildInput] = len(a.Build.Inputs) > 0
		m[scai.AttrBuildOutput] = len(a.Build.Outputs) > 0
	}
	for _, e := range a.Evidence {
		m[scai.AttrEvidencePrefix+e.Backend] = true
	}
	m[scai.AttrAgent] = a.Log.Size > 0
	return m
}

// oneBuildPerEnvironment: across all bundles, an env key is bound to at
// most one build ID (a second build in one environment is a listed threat).
func oneBuildPerEnvironment(bs []*BundleEvaluation) attest.Check {
	builds := map[string]map[string]string{} // env key → build ID → bundle
	for _, b := range bs {
		for _, r := range attestdResults(b.Report) {
			if r.BuildID == "" || r.KeyDigest == "" {
				continue
			}
			if builds[r.KeyDigest] == nil {
				builds[r.KeyDigest] = map[string]string{}
			}
			if _, ok := builds[r.KeyDigest][r.BuildID]; !ok {
				builds[r.KeyDigest][r.BuildID] = b.Name
			}
		}
	}
	keys := make([]string, 0, len(builds))
	for k := range builds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	c := attest.Check{Name: CheckOneBuildPerEnv, OK: true, Detail: fmt.Sprintf("%d environment(s), each bound to one build", len(builds))}
	for _, k := range keys {
		if len(builds[k]) > 1 {
			var ids []string
			for id, name := range builds[k] {
				ids = append(ids, fmt.Sprintf("%q (%s)", id, name))
			}
			sort.Strings(ids)
			c.OK = false
			c.Detail = fmt.Sprintf("env key %s… is bound to %d builds: %s", k[:16], len(ids), strings.Join(ids, ", "))
			break
		}
	}
	return c
}
