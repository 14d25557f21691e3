package verify

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// The runs of policyChecks, one method each.

// reference appraises every attestd attestation against the signed
// reference values (the checks go into each attestation's report, where
// they pass or fail) and fails when there is none to appraise.
func (a *appraisal) reference() (string, error) {
	res := a.p.Resolved
	if res == nil {
		return "", errors.New("the policy's files were not read (Policy.Resolve)")
	}
	rep, n, ok := a.b.Report, 0, true
	for _, r := range a.rs {
		n++
		if res.Reference == nil {
			r.Checks = append(r.Checks, attest.Check{Name: CheckReference, Detail: fmt.Sprint(res.ReferenceErr)})
		} else {
			r.Checks = append(r.Checks, attest.Check{Name: CheckReference, OK: true, Detail: "reference values signed by the bake key"})
			r.Checks = append(r.Checks, r.Appraise(res.Reference)...)
		}
		r.OK = len(r.Failed()) == 0
		ok = ok && r.OK
		rep.OK = rep.OK && r.OK
	}
	if n == 0 {
		return "", errors.New("the bundle holds no attestd attestation to appraise against the reference values")
	}
	a.refOK = ok
	return fmt.Sprintf("%d attestation(s) appraised against the reference values (their reference checks say how each compares)", n), nil
}

func (a *appraisal) registerValues() (string, error) {
	regs := slices.SortedFunc(maps.Keys(a.p.Reference.Registers), func(x, y measure.Register) int {
		return strings.Compare(x.String(), y.String())
	})
	return fmt.Sprintf("%d register(s) hold accepted reference values", len(regs)), eachResult(a.rs, func(r *Result) error {
		if r.registers == nil {
			return fmt.Errorf("%s attestation: no authenticated registers (its evidence checks failed)", r.Purpose)
		}
		for _, reg := range regs {
			got, ok := r.registers[reg]
			if !ok {
				return fmt.Errorf("%s attestation: %s is not quoted", r.Purpose, reg)
			}
			if !slices.ContainsFunc(a.p.Reference.Registers[reg], func(v HexBytes) bool { return bytes.Equal(v, got) }) {
				return fmt.Errorf("%s attestation: %s is %x, not an accepted value", r.Purpose, reg, got)
			}
		}
		return nil
	})
}

func (a *appraisal) registersCovered() (string, error) {
	names := make([]string, len(a.p.Require.Registers))
	for i, reg := range a.p.Require.Registers {
		names[i] = reg.String()
	}
	return "authenticated evidence covers " + strings.Join(names, ", "), eachResult(a.rs, func(r *Result) error {
		for _, reg := range a.p.Require.Registers {
			if _, ok := r.registers[reg]; !ok {
				return fmt.Errorf("%s attestation: %s is not covered by authenticated evidence", r.Purpose, reg)
			}
		}
		return nil
	})
}

func (a *appraisal) attributes() (string, error) {
	return "every attestation asserts the required attributes", eachResult(a.rs, func(r *Result) error {
		have := attributes(r.att)
		for _, want := range a.p.Require.Attributes {
			purpose, attr, scoped := strings.Cut(want, ":")
			if !scoped {
				attr = want
			} else if purpose != string(r.Purpose) {
				continue
			}
			if !have[attr] {
				return fmt.Errorf("%s attestation: attribute %s is not asserted", r.Purpose, attr)
			}
		}
		return nil
	})
}

func (a *appraisal) backends() (string, error) {
	return "every attestation carries authenticated evidence from " + strings.Join(a.p.Require.Backends, ", "), eachResult(a.rs, func(r *Result) error {
		for _, want := range a.p.Require.Backends {
			if !slices.Contains(r.backends, want) {
				return fmt.Errorf("%s attestation: no authenticated %s evidence", r.Purpose, want)
			}
		}
		return nil
	})
}

// present fails unless the bundle holds an attestd attestation of each
// purpose.
func (a *appraisal) present(purposes []attest.Purpose, why string) error {
	var missing []string
	for _, want := range purposes {
		if findPurpose(a.rs, want) == nil {
			missing = append(missing, string(want))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the bundle holds no %s attestation (%s)", strings.Join(missing, ", no "), why)
	}
	return nil
}

func (a *appraisal) purposes() (string, error) {
	names := make([]string, len(a.p.Require.Purposes))
	for i, pu := range a.p.Require.Purposes {
		names[i] = string(pu)
	}
	return "the bundle holds " + strings.Join(names, ", "), a.present(a.p.Require.Purposes, "require.purposes")
}

// nonces: every purpose the verifier chose a nonce for is in the bundle
// (each attestation's nonce check compares the values).
func (a *appraisal) nonces() (string, error) {
	var ps []attest.Purpose
	for _, pu := range knownPurposes {
		if _, ok := a.p.Freshness.Nonces[pu]; ok {
			ps = append(ps, pu)
		}
	}
	names := make([]string, len(ps))
	for i, pu := range ps {
		names[i] = string(pu)
	}
	return "the bundle holds the " + strings.Join(names, ", ") + " attestation(s) the nonces are for",
		a.present(ps, "a nonce was given for it")
}

func (a *appraisal) maxAge() (string, error) {
	maxAge, skew := time.Duration(a.p.Freshness.MaxAge), a.p.maxClockSkew()
	return "every attestation was issued within " + maxAge.String() + " (issuedAt is vouched for by the env key only)", eachResult(a.rs, func(r *Result) error {
		t, now := r.att.Time, a.now
		switch {
		case t.IsZero():
			return fmt.Errorf("%s attestation: no issuedAt time: age unknown", r.Purpose)
		case t.After(now.Add(skew)):
			return fmt.Errorf("%s attestation: issued at %s, in the future (now %s)", r.Purpose, t.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		case now.Sub(t) > maxAge:
			return fmt.Errorf("%s attestation: issued at %s, %s ago: older than %s", r.Purpose, t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second), maxAge)
		}
		return nil
	})
}

// build: the bundle holds the dispatch for the build ID (each attestation's
// build-id check compares the ID of every dispatch and completion).
func (a *appraisal) build() (string, error) {
	id := a.p.Build.ID
	switch d := findPurpose(a.rs, attest.PurposeDispatch); {
	case d == nil:
		return "", fmt.Errorf("the bundle holds no dispatch for build %q", id)
	case d.BuildID != id:
		return "", fmt.Errorf("the bundle is for build %q, expected %q", d.BuildID, id)
	}
	return fmt.Sprintf("the environment was dispatched to build %q", id), nil
}

func (a *appraisal) request() (string, error) {
	d := findPurpose(a.rs, attest.PurposeDispatch)
	if d == nil {
		return "", errors.New("the bundle holds no dispatch (build.request)")
	}
	b := d.att.Build
	if b == nil {
		return "", errors.New("the dispatch carries no build")
	}
	for i, want := range a.p.Build.Request {
		if !slices.ContainsFunc(b.Request, want.matches) {
			return "", fmt.Errorf("build.request[%d] (name %q, uri %q, digest %v) is not in the build request", i, want.Name, want.URI, want.Digest)
		}
	}
	return fmt.Sprintf("the build request has the %d expected entr(ies)", len(a.p.Build.Request)), nil
}

func (want RequestExpectation) matches(rd *ita.ResourceDescriptor) bool {
	if want.Name != "" && rd.GetName() != want.Name || want.URI != "" && rd.GetUri() != want.URI {
		return false
	}
	for alg, v := range want.Digest {
		if rd.GetDigest()[alg] != v {
			return false
		}
	}
	return true
}

func (a *appraisal) storageRootVerity() (string, error) {
	want, what, err := a.p.rootVerityWant()
	if err != nil {
		return "", err
	}
	return eachResultDetail(a.rs, func(r *Result) (string, error) { return storageRootVerity(r, want, what) })
}

func (a *appraisal) storageEncrypted() (string, error) {
	return eachResultDetail(a.rs, storageEncrypted)
}

func (a *appraisal) requiredLevel() (string, error) {
	want := a.p.Require.Level
	if a.b.Level < want {
		return "", fmt.Errorf("evidence supports SLSA BuildEnv L%d; the policy requires L%d", a.b.Level, want)
	}
	return fmt.Sprintf("evidence supports SLSA BuildEnv L%d; the policy requires L%d", a.b.Level, want), nil
}

// level computes the SLSA BuildEnv level the bundle's evidence supports
// (docs/verifying.md), 0 when any check so far failed: L1 reference values
// of the build image (signed by the bake key, or the verifier's own TEE
// launch measurements) that the evidence matches; L2 also an authenticated
// launch attestation and a dispatch bound to the build ID, every
// attestation anchored in a trusted AK or TEE root; L3 also hardware-rooted
// evidence in every attestation (attest.Claims.Hardware).
func (a *appraisal) level() int {
	if !a.b.Report.OK || len(a.rs) == 0 || a.p.Trust.TPM.InsecureTrustEmbeddedAK || len(a.b.Failed()) > 0 {
		return 0
	}
	if !a.refOK && !a.teeMeasurementsPinned() {
		return 0
	}
	if findPurpose(a.rs, attest.PurposeLaunch) == nil || findPurpose(a.rs, attest.PurposeDispatch) == nil {
		return 1
	}
	for _, r := range a.rs {
		if len(r.backends) == 0 {
			return 1
		}
	}
	for _, r := range a.rs {
		if !r.hardware {
			return 2
		}
	}
	return 3
}

// teeMeasurementsPinned: every attestation carries authenticated TEE
// evidence whose launch measurement the policy pins (trust.snp.measurements,
// trust.tdx.mrtds): the verifier's own reference values for the image.
func (a *appraisal) teeMeasurementsPinned() bool {
	t := a.p.Trust
	for _, r := range a.rs {
		pinned := slices.Contains(r.backends, "snp") && len(t.SNP.Measurements) > 0 ||
			slices.Contains(r.backends, "tdx") && len(t.TDX.MRTDs) > 0
		if !pinned {
			return false
		}
	}
	return len(a.rs) > 0
}

// firmwareLog: every attestation's TPM evidence carried a firmware event
// log that replayed to its quoted PCRs (attest.Claims.FirmwareLog).
func (a *appraisal) firmwareLog() (string, error) {
	return "every attestation carries a firmware event log that replays to its quoted PCRs", eachResult(a.rs, func(r *Result) error {
		if r.firmware == nil {
			return fmt.Errorf("%s attestation: no firmware event log that replays to authenticated TPM evidence", r.Purpose)
		}
		return nil
	})
}

// secureBoot: the authenticated firmware log's PCR 7 says Secure Boot was
// on.
func (a *appraisal) secureBoot() (string, error) {
	return "Secure Boot was on (the firmware log's PCR 7, replayed to the quote)", eachResult(a.rs, func(r *Result) error {
		if r.firmware == nil {
			return fmt.Errorf("%s attestation: no authenticated firmware event log: the Secure Boot state is unknown", r.Purpose)
		}
		evs, err := measure.ParseFirmwareLog(r.firmware)
		if err != nil {
			return err
		}
		on, err := measure.SecureBootState(crypto.SHA256, evs)
		if err != nil {
			return fmt.Errorf("%s attestation: %v", r.Purpose, err)
		}
		if !on {
			return fmt.Errorf("%s attestation: Secure Boot was off (PCR 7's SecureBoot variable is 0)", r.Purpose)
		}
		return nil
	})
}
