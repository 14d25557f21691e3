package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/attestd/attestd/attest"
)

// PolicyVersion is the only policy file version understood.
const PolicyVersion = 1

// maxPolicySize bounds a policy file.
const maxPolicySize = 1 << 20

// ErrPolicy marks a policy file that cannot be used (attestctl: exit 2).
var ErrPolicy = errors.New("invalid policy")

// PolicyError is a policy problem at a place in the file.
type PolicyError struct {
	Line int    // 1-based; 0 when unknown
	Key  string // dotted path, e.g. "trust.snp.measurements[0]"
	Msg  string
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap makes every PolicyError an ErrPolicy.
func (e *PolicyError) Unwrap() error { return ErrPolicy }

// Policy is an appraisal policy (docs/verifying.md, docs/policy.example.yaml):
// what to trust, what must be attested, and what the verifier expects.
// ParsePolicy checks its syntax and values; Resolve reads the files it names.
type Policy struct {
	Version   int             `yaml:"version"`
	Trust     TrustPolicy     `yaml:"trust"`
	Reference ReferencePolicy `yaml:"reference"`
	Require   RequirePolicy   `yaml:"require"`
	Freshness FreshnessPolicy `yaml:"freshness"`
	Build     BuildPolicy     `yaml:"build"`
	Storage   StoragePolicy   `yaml:"storage"`

	// Digest is SHA-256 over the policy file's bytes (named in the VSA).
	Digest [32]byte `yaml:"-"`
	// Resolved holds what Resolve read from the files the policy names.
	Resolved *Resolved `yaml:"-"`

	nodes map[string]*yaml.Node
}

// TrustPolicy says which roots and keys anchor evidence.
type TrustPolicy struct {
	TPM TPMTrust `yaml:"tpm"`
	SNP SNPTrust `yaml:"snp"`
	TDX TDXTrust `yaml:"tdx"`
}

// TPMTrust anchors TPM attestation keys.
type TPMTrust struct {
	// PinnedAKs are PEM files with one PUBLIC KEY each (attestctl register
	// writes them after credential activation).
	PinnedAKs []string `yaml:"pinned_aks"`
	// AKRoots are PEM certificate files anchoring AK certificates.
	AKRoots []string `yaml:"ak_roots"`
	// EKRoots are PEM certificate files anchoring EK certificates; used by
	// AK registration (attestctl register), not by verify.
	EKRoots []string `yaml:"ek_roots"`
	// Hardware declares that the AKs above live in hardware TPMs (not a
	// vTPM the host controls): TPM evidence then counts for BuildEnv L3.
	Hardware bool `yaml:"hardware"`
	// InsecureTrustEmbeddedAK trusts the AK in the evidence. Demos only;
	// caps the level at 0.
	InsecureTrustEmbeddedAK bool `yaml:"insecure_trust_embedded_ak"`
}

// SNPTrust anchors and constrains SEV-SNP reports.
type SNPTrust struct {
	Roots            string   `yaml:"roots"`   // PEM ARK and ASK; "" = AMD's embedded roots
	Product          string   `yaml:"product"` // Milan, Genoa, Turin (for v2 reports)
	VCEK             string   `yaml:"vcek"`    // DER VCEK when the evidence ships none
	MinimumTCB       SNPTCB   `yaml:"minimum_tcb"`
	Measurements     []string `yaml:"measurements"` // hex, 48 bytes
	HostData         string   `yaml:"host_data"`    // hex, 32 bytes
	AllowDebugUnsafe bool     `yaml:"allow_debug_unsafe"`
}

// SNPTCB is a minimum SEV-SNP TCB, component by component.
type SNPTCB struct {
	Bootloader int `yaml:"bootloader"`
	TEE        int `yaml:"tee"`
	SNP        int `yaml:"snp"`
	Microcode  int `yaml:"microcode"`
}

// TDXTrust anchors and constrains TDX quotes.
type TDXTrust struct {
	Roots                  string   `yaml:"roots"` // PEM Intel SGX root; "" = embedded
	CollateralDir          string   `yaml:"collateral_dir"`
	InsecureSkipCollateral bool     `yaml:"insecure_skip_collateral"`
	MRTDs                  []string `yaml:"mrtds"`               // hex, 48 bytes
	RTMRs                  []string `yaml:"rtmrs"`               // RTMR0-2, hex, 48 bytes
	MinimumTEETCBSVN       string   `yaml:"minimum_tee_tcb_svn"` // hex, 16 bytes
	AllowDebugUnsafe       bool     `yaml:"allow_debug_unsafe"`
}

// ReferencePolicy names reference values: a signed statement from the image
// bake (docs/reference-values.md) and/or inline register values.
type ReferencePolicy struct {
	File string   `yaml:"file"`
	Keys []string `yaml:"keys"` // PEM PUBLIC KEY files of the bake key
	// Registers maps a register ("PCR4", "RTMR1") to its accepted values
	// (hex). Checked against authenticated evidence only.
	Registers map[string][]string `yaml:"registers"`
}

// RequirePolicy says what must be attested.
type RequirePolicy struct {
	// Level is the minimum SLSA BuildEnv level (0-3) of every bundle.
	Level int `yaml:"level"`
	// Registers must be covered by authenticated evidence in every attestd
	// attestation ("PCR0", "RTMR3").
	Registers []string `yaml:"registers"`
	// Attributes are SCAI attributes every attestd attestation asserts
	// ("attestd.dev/evidence/tpm"), or PURPOSE:ATTRIBUTE for those of one
	// purpose ("complete:attestd.dev/build/output").
	Attributes []string `yaml:"attributes"`
	// Backends must each have vouched (all checks passed) in every attestd
	// attestation ("tpm", "snp", "tdx").
	Backends []string `yaml:"backends"`
	// Purposes must each appear in every bundle ("launch", "dispatch", …).
	Purposes []string `yaml:"purposes"`
}

// FreshnessPolicy says how new the evidence must be.
type FreshnessPolicy struct {
	// Nonces, by purpose (attest, dispatch, complete), hex.
	Nonces map[string]string `yaml:"nonces"`
	// MaxAge bounds now − issuedAt (the producer's timestamp, which only the
	// env key vouches for) of every attestation, e.g. "15m".
	MaxAge string `yaml:"max_age"`
	// MaxClockSkew is how far in the future issuedAt may be; default 1m.
	MaxClockSkew string `yaml:"max_clock_skew"`

	maxAge, skew time.Duration
}

// BuildPolicy says what build the bundles must be for.
type BuildPolicy struct {
	// ID is the build ID dispatch and completion must carry.
	ID string `yaml:"id"`
	// Request are descriptors the dispatch's build request must contain:
	// each field given must equal the same field of one request entry.
	Request []RequestExpectation `yaml:"request"`
	// OneBuildPerEnvironment refuses an env key seen with two build IDs
	// across all bundles verified together. Default true.
	OneBuildPerEnvironment *bool `yaml:"one_build_per_environment"`
}

// StoragePolicy says what the launch's storage event must show
// (docs/storage.md); checked by storage-root-verity and storage-encrypted.
type StoragePolicy struct {
	// RootVerity is the dm-verity root hash the root file system must be
	// served with (64 hex digits), or RootVerityReference for the roothash
	// of the signed reference values. "" checks nothing.
	RootVerity string `yaml:"root_verity"`
	// EncryptedWritable requires every writable persistent mount to be on
	// dm-crypt with an ephemeral key.
	EncryptedWritable bool `yaml:"encrypted_writable"`
}

// RootVerityReference as storage.root_verity takes the root hash from the
// reference values (reference.file).
const RootVerityReference = "reference"

// RequestExpectation is a partial resource descriptor.
type RequestExpectation struct {
	Name   string            `yaml:"name"`
	URI    string            `yaml:"uri"`
	Digest map[string]string `yaml:"digest"`
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
		return nil, &PolicyError{Msg: fmt.Sprintf("larger than %d bytes", maxPolicySize)}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, yamlError(err)
	}
	p := &Policy{nodes: map[string]*yaml.Node{}, Digest: sha256.Sum256(raw)}
	if root.Kind == 0 || len(root.Content) == 0 {
		return nil, &PolicyError{Msg: "empty policy (want at least \"version: 1\")"}
	}
	doc := root.Content[0]
	if err := walk(doc, reflect.TypeOf(*p), "", p.nodes); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(p); err != nil {
		return nil, yamlError(err)
	}
	if err := p.validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// yamlError turns a yaml.v3 error ("yaml: line 3: …") into a PolicyError.
func yamlError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	pe := &PolicyError{Msg: msg}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ":"); ok {
			if l, err := strconv.Atoi(n); err == nil {
				pe.Line, pe.Msg = l, strings.TrimSpace(after)
			}
		}
	}
	return pe
}

// walk checks the YAML tree against the Go type: mappings for structs with
// known keys only, sequences for slices, scalars of the right kind; it
// records each node by its dotted path for later error messages.
func walk(n *yaml.Node, t reflect.Type, path string, nodes map[string]*yaml.Node) error {
	nodes[path] = n
	if n.Kind == yaml.AliasNode {
		return &PolicyError{Line: n.Line, Key: path, Msg: "YAML aliases are not allowed in a policy"}
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil
	}
	bad := func(want string) error {
		return &PolicyError{Line: n.Line, Key: path, Msg: "want " + want}
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping")
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			fields[tag] = f.Type
			names = append(names, tag)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := join(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				sort.Strings(names)
				return &PolicyError{Line: k.Line, Key: kp, Msg: "unknown key (known here: " + strings.Join(names, ", ") + ")"}
			}
			if seen[k.Value] {
				return &PolicyError{Line: k.Line, Key: kp, Msg: "key given twice"}
			}
			seen[k.Value] = true
			if err := walk(v, ft, kp, nodes); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return bad("a list")
		}
		for i, c := range n.Content {
			if err := walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), nodes); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return bad("a mapping")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return &PolicyError{Line: k.Line, Key: path, Msg: "keys must be strings"}
			}
			if err := walk(n.Content[i+1], t.Elem(), join(path, k.Value), nodes); err != nil {
				return err
			}
		}
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return bad("a string")
		}
	case reflect.Int:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
			return bad("an integer")
		}
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
			return bad("true or false")
		}
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// errAt is a PolicyError at the node recorded for key.
func (p *Policy) errAt(key, format string, a ...any) error {
	line := 0
	for k := key; ; {
		if n, ok := p.nodes[k]; ok {
			line = n.Line
			break
		}
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
	}
	return &PolicyError{Line: line, Key: key, Msg: fmt.Sprintf(format, a...)}
}

var knownPurposes = map[string]bool{
	string(attest.PurposeLaunch): true, string(attest.PurposeAttest): true,
	string(attest.PurposeDispatch): true, string(attest.PurposeComplete): true,
}

func (p *Policy) validate() error {
	if p.Version != PolicyVersion {
		return p.errAt("version", "policy version %d is not supported (want %d)", p.Version, PolicyVersion)
	}
	hexN := func(key, v string, n int) error {
		b, err := hex.DecodeString(v)
		if err != nil || len(b) != n {
			return p.errAt(key, "want %d hex digits, got %q", 2*n, v)
		}
		return nil
	}
	t := p.Trust
	for i, m := range t.SNP.Measurements {
		if err := hexN(fmt.Sprintf("trust.snp.measurements[%d]", i), m, 48); err != nil {
			return err
		}
	}
	if t.SNP.HostData != "" {
		if err := hexN("trust.snp.host_data", t.SNP.HostData, 32); err != nil {
			return err
		}
	}
	if t.SNP.Product != "" && !map[string]bool{"Milan": true, "Genoa": true, "Turin": true}[t.SNP.Product] {
		return p.errAt("trust.snp.product", "unknown product %q (Milan, Genoa, Turin)", t.SNP.Product)
	}
	for k, v := range map[string]int{"bootloader": t.SNP.MinimumTCB.Bootloader, "tee": t.SNP.MinimumTCB.TEE, "snp": t.SNP.MinimumTCB.SNP, "microcode": t.SNP.MinimumTCB.Microcode} {
		if v < 0 || v > 255 {
			return p.errAt("trust.snp.minimum_tcb."+k, "want 0-255, got %d", v)
		}
	}
	for i, m := range t.TDX.MRTDs {
		if err := hexN(fmt.Sprintf("trust.tdx.mrtds[%d]", i), m, 48); err != nil {
			return err
		}
	}
	if len(t.TDX.RTMRs) != 0 && len(t.TDX.RTMRs) != 3 {
		return p.errAt("trust.tdx.rtmrs", "want exactly 3 values (RTMR0-2), got %d", len(t.TDX.RTMRs))
	}
	for i, m := range t.TDX.RTMRs {
		if err := hexN(fmt.Sprintf("trust.tdx.rtmrs[%d]", i), m, 48); err != nil {
			return err
		}
	}
	if t.TDX.MinimumTEETCBSVN != "" {
		if err := hexN("trust.tdx.minimum_tee_tcb_svn", t.TDX.MinimumTEETCBSVN, 16); err != nil {
			return err
		}
	}
	if (p.Reference.File == "") != (len(p.Reference.Keys) == 0) {
		return p.errAt("reference", "file and keys go together: a reference file needs the bake key that signed it")
	}
	for reg, vals := range p.Reference.Registers {
		key := "reference.registers." + reg
		kind, _, err := parseRegisterName(reg)
		if err != nil {
			return p.errAt(key, "%v", err)
		}
		if len(vals) == 0 {
			return p.errAt(key, "no accepted values")
		}
		for i, v := range vals {
			n := 32
			if kind == attest.RTMR {
				n = 48
			}
			if err := hexN(fmt.Sprintf("%s[%d]", key, i), v, n); err != nil {
				return err
			}
		}
	}
	r := p.Require
	if r.Level < 0 || r.Level > 3 {
		return p.errAt("require.level", "want 0-3, got %d", r.Level)
	}
	for i, reg := range r.Registers {
		if _, _, err := parseRegisterName(reg); err != nil {
			return p.errAt(fmt.Sprintf("require.registers[%d]", i), "%v", err)
		}
	}
	for i, a := range r.Attributes {
		purpose, attr, ok := strings.Cut(a, ":")
		if ok && !knownPurposes[purpose] {
			return p.errAt(fmt.Sprintf("require.attributes[%d]", i), "unknown purpose %q", purpose)
		}
		if !ok {
			attr = a
		}
		if !strings.HasPrefix(attr, "attestd.dev/") {
			return p.errAt(fmt.Sprintf("require.attributes[%d]", i), "attribute %q: attestd attributes start with attestd.dev/", attr)
		}
	}
	for i, b := range r.Backends {
		if b != "tpm" && b != "snp" && b != "tdx" {
			return p.errAt(fmt.Sprintf("require.backends[%d]", i), "unknown backend %q (tpm, snp, tdx)", b)
		}
	}
	for i, pu := range r.Purposes {
		if !knownPurposes[pu] {
			return p.errAt(fmt.Sprintf("require.purposes[%d]", i), "unknown purpose %q (launch, attest, dispatch, complete)", pu)
		}
	}
	f := &p.Freshness
	for pu, n := range f.Nonces {
		key := "freshness.nonces." + pu
		if pu != string(attest.PurposeAttest) && pu != string(attest.PurposeDispatch) && pu != string(attest.PurposeComplete) {
			return p.errAt(key, "nonces are for attest, dispatch or complete")
		}
		b, err := hex.DecodeString(n)
		if err != nil || attest.CheckNonce(b) != nil {
			return p.errAt(key, "want 2 to 128 hex digits (a 1-64 byte nonce)")
		}
	}
	var err error
	if f.MaxAge != "" {
		if f.maxAge, err = time.ParseDuration(f.MaxAge); err != nil || f.maxAge <= 0 {
			return p.errAt("freshness.max_age", "want a positive duration such as 15m, got %q", f.MaxAge)
		}
	}
	f.skew = time.Minute
	if f.MaxClockSkew != "" {
		if f.skew, err = time.ParseDuration(f.MaxClockSkew); err != nil || f.skew < 0 {
			return p.errAt("freshness.max_clock_skew", "want a duration such as 1m, got %q", f.MaxClockSkew)
		}
	}
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
	switch rv := p.Storage.RootVerity; {
	case rv == "":
	case rv == RootVerityReference:
		if p.Reference.File == "" {
			return p.errAt("storage.root_verity", "%q takes the roothash of the reference values: give reference.file and reference.keys", RootVerityReference)
		}
	default:
		if b, err := hex.DecodeString(rv); err != nil || len(b) != sha256.Size {
			return p.errAt("storage.root_verity", "want a dm-verity root hash (64 hex digits) or %q, got %q", RootVerityReference, rv)
		}
	}
	return nil
}

// Nonces returns the policy's expected nonces by purpose.
func (p *Policy) Nonces() map[attest.Purpose][]byte {
	out := map[attest.Purpose][]byte{}
	for pu, n := range p.Freshness.Nonces {
		b, _ := hex.DecodeString(n) // checked by validate
		out[attest.Purpose(pu)] = b
	}
	return out
}

// hex48 decodes validated hex.
func hex48(s string) [48]byte {
	b, _ := hex.DecodeString(s)
	return [48]byte(b)
}

// SNPMeasurements returns trust.snp.measurements decoded.
func (p *Policy) SNPMeasurements() [][48]byte {
	var out [][48]byte
	for _, m := range p.Trust.SNP.Measurements {
		out = append(out, hex48(m))
	}
	return out
}

// TDXMRTDs returns trust.tdx.mrtds decoded.
func (p *Policy) TDXMRTDs() [][48]byte {
	var out [][48]byte
	for _, m := range p.Trust.TDX.MRTDs {
		out = append(out, hex48(m))
	}
	return out
}

// TDXRTMRs returns trust.tdx.rtmrs decoded, or nil.
func (p *Policy) TDXRTMRs() *[3][48]byte {
	if len(p.Trust.TDX.RTMRs) != 3 {
		return nil
	}
	var out [3][48]byte
	for i, m := range p.Trust.TDX.RTMRs {
		out[i] = hex48(m)
	}
	return &out
}
