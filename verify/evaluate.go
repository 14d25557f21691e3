package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
)

// Policy check names (per bundle, then across bundles).
const (
	CheckPolicyRegisterValues = "policy-register-values"
	CheckPolicyRegisters      = "policy-registers"
	CheckPolicyAttributes     = "policy-attributes"
	CheckPolicyBackends       = "policy-backends"
	CheckPolicyPurposes       = "policy-purposes"
	CheckPolicyFreshness      = "policy-max-age"
	CheckPolicyBuild          = "policy-build"
	CheckPolicyRequest        = "policy-build-request"
	CheckPolicyLevel          = "policy-level"
	CheckOneBuildPerEnv       = "one-build-per-environment"

	// The launch's storage measurement (storage: in the policy).
	CheckPolicyStorageRootVerity = "storage-root-verity"
	CheckPolicyStorageEncrypted  = "storage-encrypted"
)

// Input is one bundle to evaluate, named for reports and the VSA.
type Input struct {
	Name string
	Raw  []byte
}

// Evaluation is the outcome of a policy over a set of bundles.
type Evaluation struct {
	PolicySHA256 string              `json:"policySha256,omitempty"`
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
		if !c.OK && !c.Skip {
			out = append(out, c.Name)
		}
	}
	return out
}

// Failed names the bundle's failed checks.
func (b *BundleEvaluation) Failed() []string {
	out := b.Report.Failed()
	for _, c := range b.Policy {
		if !c.OK && !c.Skip {
			out = append(out, c.Name)
		}
	}
	return out
}

// Evaluate verifies each bundle under opts (see Policy.Options), appraises
// it against the policy, and checks the bundles together. p may be nil: the
// bundles are then only verified. Evaluate does no I/O and never panics on
// malformed input. now is the appraisal time (freshness); zero means
// time.Now().
func Evaluate(p *Policy, inputs []Input, opts Options, now time.Time) *Evaluation {
	if now.IsZero() {
		now = time.Now()
	}
	ev := &Evaluation{OK: true}
	if p != nil {
		ev.PolicySHA256 = hex.EncodeToString(p.Digest[:])
	}
	for _, in := range inputs {
		d := sha256.Sum256(in.Raw)
		b := &BundleEvaluation{Name: in.Name, SHA256: hex.EncodeToString(d[:]), Report: BundleReport(in.Raw, opts)}
		if p != nil {
			p.appraise(b, opts, now)
		}
		b.OK = len(b.Failed()) == 0 && b.Report.OK
		if !b.OK {
			b.Level = 0
		}
		ev.Bundles = append(ev.Bundles, b)
	}
	if p == nil || p.Build.OneBuild() {
		ev.Checks = append(ev.Checks, oneBuildPerEnvironment(ev.Bundles))
	}
	// The level requirement is checked last: it depends on every check.
	if p != nil && p.Require.Level > 0 {
		for _, b := range ev.Bundles {
			c := attest.Check{Name: CheckPolicyLevel, OK: b.OK && b.Level >= p.Require.Level}
			c.Detail = fmt.Sprintf("evidence supports SLSA BuildEnv L%d; the policy requires L%d", b.Level, p.Require.Level)
			if !b.OK {
				c.Detail = fmt.Sprintf("not reached: other checks failed; the policy requires L%d", p.Require.Level)
			}
			b.Policy = append(b.Policy, c)
			b.OK = b.OK && c.OK
		}
	}
	for _, b := range ev.Bundles {
		ev.OK = ev.OK && b.OK
	}
	for _, c := range ev.Checks {
		ev.OK = ev.OK && (c.OK || c.Skip)
	}
	return ev
}

// attestd returns the results that are attestd attestations that opened.
func attestdResults(rep *Report) []*Result {
	var out []*Result
	for _, r := range rep.Results {
		if r.att != nil {
			out = append(out, r)
		}
	}
	return out
}

func (p *Policy) appraise(b *BundleEvaluation, opts Options, now time.Time) {
	rs := attestdResults(b.Report)
	add := func(name string, err error, detail string) {
		c := attest.Check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
		}
		b.Policy = append(b.Policy, c)
	}
	refOK := p.appraiseReference(b.Report, opts)
	if len(p.Reference.Registers) > 0 {
		add(CheckPolicyRegisterValues, eachResult(rs, func(r *Result) error { return p.registerValues(r) }),
			fmt.Sprintf("%d register(s) hold accepted reference values", len(p.Reference.Registers)))
	}
	if len(p.Require.Registers) > 0 {
		add(CheckPolicyRegisters, eachResult(rs, func(r *Result) error {
			for _, name := range p.Require.Registers {
				kind, idx, _ := parseRegisterName(name)
				if _, ok := r.registers[attest.Register{Kind: kind, Index: idx}]; !ok {
					return fmt.Errorf("%s is not covered by authenticated evidence", name)
				}
			}
			return nil
		}), "authenticated evidence covers "+strings.Join(p.Require.Registers, ", "))
	}
	if len(p.Require.Attributes) > 0 {
		add(CheckPolicyAttributes, eachResult(rs, func(r *Result) error {
			have := attributes(r.att)
			for _, want := range p.Require.Attributes {
				purpose, attr, scoped := strings.Cut(want, ":")
				if !scoped {
					attr = want
				} else if purpose != string(r.Purpose) {
					continue
				}
				if !have[attr] {
					return fmt.Errorf("attribute %s is not asserted", attr)
				}
			}
			return nil
		}), "every attestation asserts the required attributes")
	}
	if len(p.Require.Backends) > 0 {
		add(CheckPolicyBackends, eachResult(rs, func(r *Result) error {
			for _, want := range p.Require.Backends {
				if !slices.Contains(r.backends, want) {
					return fmt.Errorf("no authenticated %s evidence", want)
				}
			}
			return nil
		}), "every attestation carries authenticated evidence from "+strings.Join(p.Require.Backends, ", "))
	}
	if len(p.Require.Purposes) > 0 {
		var missing []string
		for _, want := range p.Require.Purposes {
			if !slices.ContainsFunc(rs, func(r *Result) bool { return string(r.Purpose) == want }) {
				missing = append(missing, want)
			}
		}
		var err error
		if len(missing) > 0 {
			err = fmt.Errorf("the bundle holds no %s attestation", strings.Join(missing, ", no "))
		}
		add(CheckPolicyPurposes, err, "the bundle holds "+strings.Join(p.Require.Purposes, ", "))
	}
	if p.Freshness.maxAge > 0 {
		add(CheckPolicyFreshness, eachResult(rs, func(r *Result) error {
			t := r.att.Time
			switch {
			case t.IsZero():
				return fmt.Errorf("no issuedAt time: age unknown")
			case t.After(now.Add(p.Freshness.skew)):
				return fmt.Errorf("issued at %s, in the future (now %s)", t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
			case now.Sub(t) > p.Freshness.maxAge:
				return fmt.Errorf("issued at %s, %s ago: older than %s", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second), p.Freshness.MaxAge)
			}
			return nil
		}), "every attestation was issued within "+p.Freshness.MaxAge+" (issuedAt is vouched for by the env key only)")
	}
	buildID := opts.BuildID
	if buildID != "" {
		var err error
		switch d := findPurpose(rs, attest.PurposeDispatch); {
		case d == nil:
			err = fmt.Errorf("the bundle holds no dispatch for build %q", buildID)
		case d.BuildID != buildID:
			err = fmt.Errorf("the bundle is for build %q, expected %q", d.BuildID, buildID)
		}
		add(CheckPolicyBuild, err, fmt.Sprintf("the environment was dispatched to build %q", buildID))
	}
	if len(p.Build.Request) > 0 {
		var err error
		if d := findPurpose(rs, attest.PurposeDispatch); d == nil {
			err = fmt.Errorf("the bundle holds no dispatch")
		} else {
			err = p.requestMatches(d.att.Build)
		}
		add(CheckPolicyRequest, err, fmt.Sprintf("the build request has the %d expected entr(ies)", len(p.Build.Request)))
	}
	p.appraiseStorage(rs, add)
	b.Level = p.level(b.Report, rs, refOK)
}

// appraiseReference adds the reference checks to every attestd
// attestation, as attestctl verify --reference does, and reports whether
// all passed.
func (p *Policy) appraiseReference(rep *Report, opts Options) bool {
	if p.Resolved == nil || p.Reference.File == "" {
		return false
	}
	// The launch prefix of the agent's log is the same in every
	// attestation of a chain (chain-event-log checks that), so appraising
	// the launch and admission attestations covers the bundle.
	ok, n := true, 0
	for _, r := range rep.Results {
		if r.att == nil || (r.Purpose != attest.PurposeLaunch && r.Purpose != attest.PurposeAttest) {
			continue
		}
		n++
		if p.Resolved.Reference == nil {
			r.Checks = append(r.Checks, attest.Check{Name: CheckReference, Detail: fmt.Sprint(p.Resolved.ReferenceErr)})
			ok = false
		} else {
			r.Checks = append(r.Checks, attest.Check{Name: CheckReference, OK: true, Detail: "reference values signed by the bake key"})
			for _, c := range r.Appraise(p.Resolved.Reference) {
				r.Checks = append(r.Checks, c)
				ok = ok && c.OK
			}
		}
		r.OK = len(r.Failed()) == 0
		rep.OK = rep.OK && r.OK
	}
	return ok && n > 0
}

func (p *Policy) registerValues(r *Result) error {
	if r.registers == nil {
		return fmt.Errorf("%s attestation: no authenticated registers (its evidence checks failed)", r.Purpose)
	}
	names := make([]string, 0, len(p.Reference.Registers))
	for n := range p.Reference.Registers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		kind, idx, _ := parseRegisterName(name)
		got, ok := r.registers[attest.Register{Kind: kind, Index: idx}]
		if !ok {
			return fmt.Errorf("%s attestation: %s is not quoted", r.Purpose, name)
		}
		if !slices.Contains(p.Reference.Registers[name], hex.EncodeToString(got)) {
			return fmt.Errorf("%s attestation: %s is %x, not an accepted value", r.Purpose, name, got)
		}
	}
	return nil
}

func (p *Policy) requestMatches(b *scai.Build) error {
	if b == nil {
		return fmt.Errorf("the dispatch carries no build")
	}
	for i, want := range p.Build.Request {
		if !slices.ContainsFunc(b.Request, func(rd *ita.ResourceDescriptor) bool {
			if want.Name != "" && rd.GetName() != want.Name || want.URI != "" && rd.GetUri() != want.URI {
				return false
			}
			for alg, v := range want.Digest {
				if rd.GetDigest()[alg] != v {
					return false
				}
			}
			return true
		}) {
			return fmt.Errorf("build.request[%d] (name %q, uri %q, digest %v) is not in the build request", i, want.Name, want.URI, want.Digest)
		}
	}
	return nil
}

// level computes the SLSA BuildEnv level the bundle's evidence supports
// (docs/verifying.md): L1 signed reference values of the build image that
// the evidence matches; L2 also an authenticated launch attestation and a
// dispatch bound to the build ID, anchored in a trusted AK or TEE root;
// L3 also hardware-rooted evidence in every attestation (SEV-SNP or TDX,
// or a TPM the policy declares hardware).
func (p *Policy) level(rep *Report, rs []*Result, refOK bool) int {
	if !refOK {
		refOK = p.teeMeasurementsPinned(rs)
	}
	if !rep.OK || len(rs) == 0 || !refOK || p.Trust.TPM.InsecureTrustEmbeddedAK {
		return 0
	}
	if findPurpose(rs, attest.PurposeLaunch) == nil || findPurpose(rs, attest.PurposeDispatch) == nil {
		return 1
	}
	for _, r := range rs {
		if len(r.backends) == 0 {
			return 1
		}
	}
	for _, r := range rs {
		hw := false
		for _, b := range r.backends {
			switch b {
			case "snp":
				hw = hw || !p.Trust.SNP.AllowDebugUnsafe
			case "tdx":
				// A skipped collateral check leaves the platform's TCB
				// unknown: not L3.
				hw = hw || !p.Trust.TDX.AllowDebugUnsafe && passedNotSkipped(r.Checks, checkTDXCollateral)
			case "tpm":
				hw = hw || p.Trust.TPM.Hardware
			}
		}
		if !hw {
			return 2
		}
	}
	return 3
}

// teeMeasurementsPinned: every attestation carries authenticated TEE
// evidence whose launch measurement the policy pins (trust.snp.measurements,
// trust.tdx.mrtds): the verifier's own reference values for the image.
func (p *Policy) teeMeasurementsPinned(rs []*Result) bool {
	for _, r := range rs {
		pinned := slices.Contains(r.backends, "snp") && len(p.Trust.SNP.Measurements) > 0 ||
			slices.Contains(r.backends, "tdx") && len(p.Trust.TDX.MRTDs) > 0
		if !pinned {
			return false
		}
	}
	return len(rs) > 0
}

// checkTDXCollateral is attest/tdx's CheckCollateral (verify does not
// import backends).
const checkTDXCollateral = "tdx-collateral"

func passedNotSkipped(checks []attest.Check, name string) bool {
	for _, c := range checks {
		if c.Name == name {
			return c.OK && !c.Skip
		}
	}
	return false
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
