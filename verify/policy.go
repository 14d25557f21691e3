package verify

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/internal/yamlfile"
	"github.com/attestd/attestd/measure"
)

// PolicyVersion is the only policy file version understood.
const PolicyVersion = 1

// maxPolicySize bounds a policy file.
const maxPolicySize = 1 << 20

// ErrPolicy marks a policy file that cannot be used (attestctl: exit 2).
var ErrPolicy = errors.New("invalid policy")

// PolicyError is a policy problem at a place in the file (its Line, Key
// and Msg); every one is an ErrPolicy.
type PolicyError = yamlfile.Error

func policyErr(line int, key, msg string) *PolicyError {
	return &PolicyError{Line: line, Key: key, Msg: msg, Kind: ErrPolicy}
}

// Policy is an appraisal policy (docs/verifying.md, docs/policy.example.yaml):
// what to trust, what must be attested, and what the verifier expects.
// Command-line flags are a shorthand for the same fields. ParsePolicy reads
// one from YAML and checks it; a policy built or changed in code is checked
// by Seal. Resolve reads the files it names.
type Policy struct {
	Version   int             `yaml:"version"`
	Trust     TrustPolicy     `yaml:"trust,omitempty"`
	Reference ReferencePolicy `yaml:"reference,omitempty"`
	Require   RequirePolicy   `yaml:"require,omitempty"`
	Freshness FreshnessPolicy `yaml:"freshness,omitempty"`
	Build     BuildPolicy     `yaml:"build,omitempty"`
	Storage   StoragePolicy   `yaml:"storage,omitempty"`

	// Digest is SHA-256 over the policy file's bytes, or over Render's
	// output for a policy Seal checked (named in VSAs and SVRs).
	Digest [32]byte `yaml:"-"`
	// Resolved holds what Resolve read from the files the policy names.
	Resolved *Resolved `yaml:"-"`

	nodes yamlfile.Nodes
}

// TrustPolicy says which roots and keys anchor evidence.
type TrustPolicy struct {
	TPM TPMTrust `yaml:"tpm,omitempty"`
	SNP SNPTrust `yaml:"snp,omitempty"`
	TDX TDXTrust `yaml:"tdx,omitempty"`
}

// TPMTrust anchors TPM attestation keys.
type TPMTrust struct {
	// PinnedAKs are PEM files with one PUBLIC KEY each (attestctl register
	// writes them after credential activation).
	PinnedAKs []string `yaml:"pinned_aks,omitempty"`
	// AKRoots are PEM certificate files anchoring AK certificates.
	AKRoots []string `yaml:"ak_roots,omitempty"`
	// EKRoots are PEM certificate files anchoring EK certificates; used by
	// AK registration (attestctl register), not by verify.
	EKRoots []string `yaml:"ek_roots,omitempty"`
	// Hardware declares that the AKs above live in hardware TPMs (not a
	// vTPM the host controls): TPM evidence then counts for BuildEnv L3.
	Hardware bool `yaml:"hardware,omitempty"`
	// InsecureTrustEmbeddedAK trusts the AK in the evidence. Demos only;
	// caps the level at 0.
	InsecureTrustEmbeddedAK bool `yaml:"insecure_trust_embedded_ak,omitempty"`
}

// SNPTrust anchors and constrains SEV-SNP reports.
type SNPTrust struct {
	Roots            string  `yaml:"roots,omitempty"`   // PEM ARK and ASK; "" = AMD's embedded roots
	Product          string  `yaml:"product,omitempty"` // Milan, Genoa, Turin (for v2 reports)
	VCEK             string  `yaml:"vcek,omitempty"`    // DER VCEK when the evidence ships none
	MinimumTCB       SNPTCB  `yaml:"minimum_tcb,omitempty"`
	Measurements     []Hex48 `yaml:"measurements,omitempty"`
	HostData         *Hex32  `yaml:"host_data,omitempty"`
	AllowDebugUnsafe bool    `yaml:"allow_debug_unsafe,omitempty"`
}

// SNPTCB is a minimum SEV-SNP TCB, component by component.
type SNPTCB struct {
	Bootloader uint8 `yaml:"bootloader,omitempty"`
	TEE        uint8 `yaml:"tee,omitempty"`
	SNP        uint8 `yaml:"snp,omitempty"`
	Microcode  uint8 `yaml:"microcode,omitempty"`
}

// TDXTrust anchors and constrains TDX quotes.
type TDXTrust struct {
	Roots                  string  `yaml:"roots,omitempty"` // PEM Intel SGX root; "" = embedded
	CollateralDir          string  `yaml:"collateral_dir,omitempty"`
	InsecureSkipCollateral bool    `yaml:"insecure_skip_collateral,omitempty"`
	MRTDs                  []Hex48 `yaml:"mrtds,omitempty"`
	RTMRs                  []Hex48 `yaml:"rtmrs,omitempty"` // RTMR0-2
	MinimumTEETCBSVN       *Hex16  `yaml:"minimum_tee_tcb_svn,omitempty"`
	AllowDebugUnsafe       bool    `yaml:"allow_debug_unsafe,omitempty"`
}

// ReferencePolicy names reference values: a signed statement from the image
// bake (docs/reference-values.md) and/or inline register values.
type ReferencePolicy struct {
	File string   `yaml:"file,omitempty"`
	Keys []string `yaml:"keys,omitempty"` // PEM PUBLIC KEY files of the bake key
	// Registers maps a register ("PCR4", "RTMR1") to its accepted values.
	// Checked against authenticated evidence only.
	Registers map[measure.Register][]HexBytes `yaml:"registers,omitempty"`
}

// RequirePolicy says what must be attested.
type RequirePolicy struct {
	// Level is the minimum SLSA BuildEnv level (0-3) of every bundle.
	Level int `yaml:"level,omitempty"`
	// Registers must be covered by authenticated evidence in every attestd
	// attestation ("PCR0", "RTMR3").
	Registers []measure.Register `yaml:"registers,omitempty"`
	// Attributes are SCAI attributes every attestd attestation asserts
	// ("attestd.dev/evidence/tpm"), or PURPOSE:ATTRIBUTE for those of one
	// purpose ("complete:attestd.dev/build/output").
	Attributes []string `yaml:"attributes,omitempty"`
	// Backends must each have vouched (all checks passed) in every attestd
	// attestation ("tpm", "snp", "tdx").
	Backends []string `yaml:"backends,omitempty"`
	// Purposes must each appear in every bundle ("launch", "dispatch", …).
	Purposes []attest.Purpose `yaml:"purposes,omitempty"`
	// SecureBoot requires Secure Boot on: the authenticated firmware event
	// log's PCR 7 records SecureBoot = 1 (policy-secure-boot).
	SecureBoot bool `yaml:"secure_boot,omitempty"`
	// FirmwareLog requires every attestation to carry TPM evidence with a
	// firmware event log that replays to its quoted PCRs; without it a
	// missing log is a skipped check (policy-firmware-log).
	FirmwareLog bool `yaml:"firmware_log,omitempty"`
}

// FreshnessPolicy says how new the evidence must be.
type FreshnessPolicy struct {
	// Nonces, by purpose (attest, dispatch, complete): the attestation of
	// that purpose must be bound to it, and must be in the bundle.
	Nonces map[attest.Purpose]Nonce `yaml:"nonces,omitempty"`
	// MaxAge bounds now − issuedAt (the producer's timestamp, which only the
	// env key vouches for) of every attestation, e.g. "15m".
	MaxAge Duration `yaml:"max_age,omitempty"`
	// MaxClockSkew is how far in the future issuedAt may be; nil: 1m.
	MaxClockSkew *Duration `yaml:"max_clock_skew,omitempty"`
}

// BuildPolicy says what build the bundles must be for.
type BuildPolicy struct {
	// ID is the build ID dispatch and completion must carry; the bundle must
	// hold the dispatch.
	ID string `yaml:"id,omitempty"`
	// Request are descriptors the dispatch's build request must contain:
	// each field given must equal the same field of one request entry.
	Request []RequestExpectation `yaml:"request,omitempty"`
	// OneBuildPerEnvironment refuses an env key seen with two build IDs
	// across all bundles verified together. Default true.
	OneBuildPerEnvironment *bool `yaml:"one_build_per_environment,omitempty"`
}

// StoragePolicy says what the launch's storage event must show
// (docs/storage.md); checked by storage-root-verity and storage-encrypted.
type StoragePolicy struct {
	// RootVerity is the dm-verity root hash the root file system must be
	// served with, or the roothash of the signed reference values; nil
	// checks nothing.
	RootVerity *RootVerity `yaml:"root_verity,omitempty"`
	// EncryptedWritable requires every writable persistent mount to be on
	// dm-crypt with an ephemeral key.
	EncryptedWritable bool `yaml:"encrypted_writable,omitempty"`
}

// RequestExpectation is a partial resource descriptor.
type RequestExpectation struct {
	Name   string            `yaml:"name,omitempty"`
	URI    string            `yaml:"uri,omitempty"`
	Digest map[string]string `yaml:"digest,omitempty"`
}

// OneBuild reports whether one-build-per-environment is enforced.
func (b BuildPolicy) OneBuild() bool {
	return b.OneBuildPerEnvironment == nil || *b.OneBuildPerEnvironment
}

// ParsePolicy parses and checks a policy file. Unknown keys, wrong types
// and bad values are *PolicyError values naming the line and key. It reads
// no files (see Resolve).
func ParsePolicy(raw []byte) (*Policy, error) {
	if len(raw) > maxPolicySize {
		return nil, policyErr(0, "", fmt.Sprintf("larger than %d bytes", maxPolicySize))
	}
	p := &Policy{}
	nodes, err := yamlfile.Decode(raw, p)
	if err != nil {
		return nil, policyError(err)
	}
	if len(nodes) == 0 {
		return nil, policyErr(0, "", "empty policy (want at least \"version: 1\")")
	}
	p.nodes, p.Digest = nodes, sha256.Sum256(raw)
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// NewPolicy is an empty policy of the current version, to be filled in
// code (from command-line flags, say) and checked with Seal.
func NewPolicy() *Policy { return &Policy{Version: PolicyVersion} }

// Seal checks a policy built or changed in code, as ParsePolicy checks a
// file, and sets Digest over its rendered form (Render).
func (p *Policy) Seal() error {
	if err := p.validate(); err != nil {
		return err
	}
	raw, err := p.Render()
	if err != nil {
		return err
	}
	p.Digest = sha256.Sum256(raw)
	return nil
}

// Render writes the policy as YAML that ParsePolicy reads back to the same
// policy (file names as given).
func (p *Policy) Render() ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("render policy: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("render policy: %w", err)
	}
	return buf.Bytes(), nil
}

// policyError makes a yamlfile error a *PolicyError.
func policyError(err error) error {
	var ye *yamlfile.Error
	if errors.As(err, &ye) {
		return policyErr(ye.Line, ye.Key, ye.Msg)
	}
	return policyErr(0, "", err.Error())
}

// errAt is a PolicyError at the place of key in the file the policy was
// parsed from (no line for a policy built in code).
func (p *Policy) errAt(key, format string, a ...any) error {
	return policyError(p.nodes.Errorf(key, format, a...))
}

var knownPurposes = []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete}

var knownBackends = []string{"tpm", "snp", "tdx"}

// validate checks what the value types cannot check alone: enumerations,
// ranges, and fields that go together.
func (p *Policy) validate() error {
	if p.Version != PolicyVersion {
		return p.errAt("version", "policy version %d is not supported (want %d)", p.Version, PolicyVersion)
	}
	for _, check := range []func() error{p.validateTrust, p.validateReference, p.validateRequire, p.validateFreshness, p.validateBuild, p.validateStorage} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

func (p *Policy) validateTrust() error {
	if pr := p.Trust.SNP.Product; pr != "" && !slices.Contains([]string{"Milan", "Genoa", "Turin"}, pr) {
		return p.errAt("trust.snp.product", "unknown product %q (Milan, Genoa, Turin)", pr)
	}
	if n := len(p.Trust.TDX.RTMRs); n != 0 && n != 3 {
		return p.errAt("trust.tdx.rtmrs", "want exactly 3 values (RTMR0-2), got %d", n)
	}
	return nil
}

func (p *Policy) validateReference() error {
	if (p.Reference.File == "") != (len(p.Reference.Keys) == 0) {
		return p.errAt("reference", "file and keys go together: a reference file needs the bake key that signed it")
	}
	for reg, vals := range p.Reference.Registers {
		key := "reference.registers." + reg.String()
		if len(vals) == 0 {
			return p.errAt(key, "no accepted values")
		}
		size := sha256.Size // the agent's PCR bank
		if reg.Kind == measure.RTMR {
			size = 48
		}
		for i, v := range vals {
			if len(v) != size {
				return p.errAt(fmt.Sprintf("%s[%d]", key, i), "want %d hex digits for %s, got %d", 2*size, reg, 2*len(v))
			}
		}
	}
	return nil
}

func (p *Policy) validateRequire() error {
	r := p.Require
	if r.Level < 0 || r.Level > 3 {
		return p.errAt("require.level", "want 0-3, got %d", r.Level)
	}
	for i, a := range r.Attributes {
		key := fmt.Sprintf("require.attributes[%d]", i)
		purpose, attr, scoped := strings.Cut(a, ":")
		if !scoped {
			attr = a
		} else if !slices.Contains(knownPurposes, attest.Purpose(purpose)) {
			return p.errAt(key, "unknown purpose %q (launch, attest, dispatch, complete)", purpose)
		}
		if !strings.HasPrefix(attr, "attestd.dev/") {
			return p.errAt(key, "attribute %q: attestd attributes start with attestd.dev/", attr)
		}
	}
	for i, b := range r.Backends {
		if !slices.Contains(knownBackends, b) {
			return p.errAt(fmt.Sprintf("require.backends[%d]", i), "unknown backend %q (tpm, snp, tdx)", b)
		}
	}
	for i, pu := range r.Purposes {
		if !slices.Contains(knownPurposes, pu) {
			return p.errAt(fmt.Sprintf("require.purposes[%d]", i), "unknown purpose %q (launch, attest, dispatch, complete)", pu)
		}
	}
	return nil
}

func (p *Policy) validateFreshness() error {
	for pu := range p.Freshness.Nonces {
		if pu != attest.PurposeAttest && pu != attest.PurposeDispatch && pu != attest.PurposeComplete {
			return p.errAt("freshness.nonces."+string(pu), "nonces are for attest, dispatch or complete")
		}
	}
	if p.nodes.Has("freshness.max_age") && p.Freshness.MaxAge == 0 {
		return p.errAt("freshness.max_age", "want a positive duration such as 15m")
	}
	return nil
}

func (p *Policy) validateBuild() error {
	if p.Build.ID != "" {
		if err := attest.CheckBuildID(p.Build.ID); err != nil {
			return p.errAt("build.id", "%v", err)
		}
	}
	for i, rq := range p.Build.Request {
		if rq.Name == "" && rq.URI == "" && len(rq.Digest) == 0 {
			return p.errAt(fmt.Sprintf("build.request[%d]", i), "give at least one of name, uri, digest")
		}
	}
	return nil
}

func (p *Policy) validateStorage() error {
	if rv := p.Storage.RootVerity; rv != nil && rv.Reference && p.Reference.File == "" {
		return p.errAt("storage.root_verity", "%q takes the roothash of the reference values: give reference.file and reference.keys", RootVerityReference)
	}
	return nil
}

// maxClockSkew is freshness.max_clock_skew or its default.
func (p *Policy) maxClockSkew() time.Duration {
	if p.Freshness.MaxClockSkew == nil {
		return time.Minute
	}
	return time.Duration(*p.Freshness.MaxClockSkew)
}
