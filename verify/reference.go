package verify

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// Reference values: what an image baker predicts the measurements of a
// correctly booted image to be (docs/reference-values.md). OpenReference
// checks the statement's authenticity (the bake key's signature); Appraise
// compares authenticated evidence with the values (policy). Neither does the
// other's job.

// ReferencePredicateType is the predicate type of a reference-values statement.
const ReferencePredicateType = "https://attestd.dev/reference-values/v0.1"

// Check names added by reference appraisal.
const (
	CheckReference         = "reference-values"
	CheckRefAgentRegister  = "reference-agent-register"
	CheckRefRootHash       = "reference-roothash"
	CheckRefPCRPrefix      = "reference-pcr" // + index, e.g. reference-pcr4
	maxReferenceStatement  = 1 << 20
	referenceStatementType = "https://in-toto.io/Statement/v1"
)

// ReferenceValues is the predicate of a reference-values statement.
type ReferenceValues struct {
	// Bank is the hash algorithm of every value: "sha256".
	Bank string `json:"bank"`
	// Agent is attestd's register after launch.
	Agent AgentReference `json:"agent"`
	// RootHash is the dm-verity root hash of the image's root file system
	// (lower-case hex), as on the kernel command line.
	RootHash string `json:"roothash,omitempty"`
	// PCRs maps a PCR index ("4", "7", "9", "11", "12") to its expected
	// value (hex) at the time attestd quotes: only the PCRs predicted from
	// the image.
	PCRs map[string]string `json:"pcrs,omitempty"`
	// Boot describes how the PCR values were predicted (informational).
	Boot *BootReference `json:"boot,omitempty"`
}

// AgentReference is the expected launch state of attestd's register.
type AgentReference struct {
	Register string `json:"register"` // "PCR13" or "RTMR3"
	// Launch is the register value after the launch separator (hex) over
	// every launch event except storage events (measure.EventStorage),
	// which record the running system's devices and mounts and cannot be
	// predicted at bake time: the verifier drops them from the
	// authenticated log before comparing, and the storage policy appraises
	// them instead.
	Launch string `json:"launch"`
	// Events are the launch events, in order, as attestd records them
	// (without storage events).
	Events []ReferenceEvent `json:"events"`
}

// ReferenceEvent is one predicted attestd event: its type name and its data
// (the JSON attestd records, verbatim).
type ReferenceEvent struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	// SHA256 is the digest the register is extended with, for an event
	// whose digest is not its data's: a preboot event (systemd-stub's
	// measurement of the image's system extensions, attestctl reference
	// --sysext). It is compared, and What names what it measures.
	SHA256 string `json:"sha256,omitempty"`
	What   string `json:"what,omitempty"`
}

// BootReference records the inputs of the PCR predictions.
type BootReference struct {
	UKIAuthenticodeSHA256 string `json:"ukiAuthenticodeSha256,omitempty"`
	// KernelAuthenticodeSHA256 is the Authenticode digest of the UKI's
	// .linux section, which systemd-stub loads as an image of its own.
	KernelAuthenticodeSHA256 string   `json:"kernelAuthenticodeSha256,omitempty"`
	Cmdline                  string   `json:"cmdline,omitempty"`
	PCR11Phases              []string `json:"pcr11Phases"`
	// SecureBoot is the Secure Boot state PCR 7 was predicted for: "off"
	// (no keys enrolled); "" when PCR 7 is not predicted (the platform
	// policy pins it).
	SecureBoot string `json:"secureBoot,omitempty"`
	// Events are the predicted firmware-log events of each predicted PCR,
	// in order: they let the verifier name the event that differs.
	Events map[string][]BootEvent `json:"events,omitempty"`
}

// BootEvent is one predicted firmware-log event.
type BootEvent struct {
	Type   string `json:"type"`
	What   string `json:"what,omitempty"`
	SHA256 string `json:"sha256"`
}

// BootEvents converts predicted firmware events for the statement.
func BootEvents(evs []measure.FirmwareEvent) []BootEvent {
	out := make([]BootEvent, len(evs))
	for i, e := range evs {
		out[i] = BootEvent{Type: e.Type, What: e.What, SHA256: hex.EncodeToString(e.Digest)}
	}
	return out
}

// ReferenceSubject names what the reference values are for.
type ReferenceSubject struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

type referenceStatement struct {
	Type          string            `json:"_type"`
	Subject       []json.RawMessage `json:"subject"`
	PredicateType string            `json:"predicateType"`
	Predicate     ReferenceValues   `json:"predicate"`
}

// NewReferenceStatement returns the in-toto Statement (JSON) for rv about
// the given subjects (e.g. the UKI and the disk image).
func NewReferenceStatement(subjects []ReferenceSubject, rv *ReferenceValues) ([]byte, error) {
	if err := rv.validate(); err != nil {
		return nil, err
	}
	st := referenceStatement{Type: referenceStatementType, PredicateType: ReferencePredicateType, Predicate: *rv}
	for _, s := range subjects {
		b, err := json.Marshal(map[string]any{"name": s.Name, "digest": map[string]string{"sha256": s.SHA256}})
		if err != nil {
			return nil, err
		}
		st.Subject = append(st.Subject, b)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, fmt.Errorf("encode reference statement: %w", err)
	}
	var pb ita.Statement
	if err := protojson.Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("reference statement: %w", err)
	}
	if err := pb.Validate(); err != nil {
		return nil, fmt.Errorf("reference statement: %w", err)
	}
	return b, nil
}

// SignReference signs a reference statement with the bake key (DSSE, payload
// type application/vnd.in-toto+json).
func SignReference(ctx context.Context, key crypto.Signer, statement []byte) ([]byte, error) {
	return scai.SignPayload(ctx, key, statement)
}

// OpenReference checks that raw is a DSSE envelope signed by one of keys
// whose payload is a reference-values statement, and returns the values.
// This is the authenticity half; Appraise is the policy half.
func OpenReference(raw []byte, keys []crypto.PublicKey) (*ReferenceValues, error) {
	payload, err := openSigned(raw, maxReferenceStatement, keys)
	if err != nil {
		return nil, fmt.Errorf("reference values: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var st referenceStatement
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("reference values: %w", err)
	}
	if st.Type != referenceStatementType || st.PredicateType != ReferencePredicateType {
		return nil, fmt.Errorf("reference values: statement type %q / predicate type %q, want %q / %q",
			st.Type, st.PredicateType, referenceStatementType, ReferencePredicateType)
	}
	if err := st.Predicate.validate(); err != nil {
		return nil, err
	}
	return &st.Predicate, nil
}

func (rv *ReferenceValues) validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("reference values: "+f, a...) }
	if rv.Bank != "sha256" {
		return bad("bank %q: only sha256 is supported", rv.Bank)
	}
	isHex := func(s string) bool {
		b, err := hex.DecodeString(s)
		return err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == s
	}
	if rv.Agent.Register != "PCR13" && !isAgentRegister(rv.Agent.Register) {
		return bad("agent register %q", rv.Agent.Register)
	}
	if !isHex(rv.Agent.Launch) {
		return bad("agent launch value %q is not 64 lower-case hex digits", rv.Agent.Launch)
	}
	for i, e := range rv.Agent.Events {
		if (e.Type == measure.EventPreboot.String()) != (e.SHA256 != "") || e.SHA256 != "" && !isHex(e.SHA256) {
			return bad("agent.events[%d]: a preboot event needs its sha256 (64 lower-case hex digits), no other event has one", i)
		}
	}
	if rv.RootHash != "" {
		if b, err := hex.DecodeString(rv.RootHash); err != nil || len(b) == 0 || hex.EncodeToString(b) != rv.RootHash {
			return bad("roothash %q is not lower-case hex", rv.RootHash)
		}
	}
	for k, v := range rv.PCRs {
		if !isPCRIndex(k) {
			return bad("PCR index %q", k)
		}
		if !isHex(v) {
			return bad("PCR %s value %q is not 64 lower-case hex digits", k, v)
		}
	}
	if b := rv.Boot; b != nil {
		if b.SecureBoot != "" && b.SecureBoot != SecureBootOff {
			return bad("boot.secureBoot %q: want %q or nothing", b.SecureBoot, SecureBootOff)
		}
		for k, evs := range b.Events {
			if !isPCRIndex(k) {
				return bad("boot.events: PCR index %q", k)
			}
			for j, e := range evs {
				if !isHex(e.SHA256) || e.Type == "" {
					return bad("boot.events[%s][%d]: want a type and 64 lower-case hex digits", k, j)
				}
			}
		}
	}
	return nil
}

// SecureBootOff is boot.secureBoot for PCR 7 predicted with Secure Boot off
// and no keys enrolled.
const SecureBootOff = "off"

func isPCRIndex(k string) bool {
	i, err := strconv.Atoi(k)
	return err == nil && i >= 0 && i <= 23 && strconv.Itoa(i) == k
}

func isAgentRegister(s string) bool {
	_, err := measure.ParseRegister(s)
	return err == nil
}

// Appraise compares one attestation with reference values and returns the
// reference checks. It takes its register values only from evidence that
// the backend verifiers accept under opts (Envelope), and the agent's events
// only from a log that replays to those values; if either fails, every
// reference check is reported as not checked. Callers holding a Result use
// Result.Appraise and skip verifying twice.
//
// A statement that is not an attestd attestation (a SCAI predicate), such as
// a provenance statement the environment key signed, has no measurements:
// Appraise returns no checks for it.
func Appraise(env *dsse.Envelope, m *Material, opts Options, rv *ReferenceValues) []attest.Check {
	if _, err := scai.Open(env); errors.Is(err, scai.ErrPredicateType) {
		return nil
	}
	return Envelope(env, m, opts).Appraise(rv)
}

// Appraise is the package-level Appraise for an attestation already
// verified: it uses the registers and event log r authenticated, without
// verifying the evidence again.
func (r *Result) Appraise(rv *ReferenceValues) []attest.Check {
	if r.Purpose == PurposeSignedStatement {
		return nil
	}
	names := []string{CheckRefAgentRegister}
	if rv.RootHash != "" {
		names = append(names, CheckRefRootHash)
	}
	pcrs := make([]int, 0, len(rv.PCRs))
	for k := range rv.PCRs {
		i, _ := strconv.Atoi(k)
		pcrs = append(pcrs, i)
	}
	sort.Ints(pcrs)
	for _, i := range pcrs {
		names = append(names, CheckRefPCRPrefix+strconv.Itoa(i))
	}
	notChecked := func(why string) []attest.Check {
		var out []attest.Check
		for _, n := range names {
			out = append(out, attest.Check{Name: n, Detail: "not checked: " + why})
		}
		return out
	}
	regs, bank, recs := r.registers, r.bank, r.Events
	if regs == nil {
		return notChecked("the attestation's evidence or event log did not verify (see its checks)")
	}
	if bank != crypto.SHA256 {
		return notChecked(fmt.Sprintf("evidence bank is %v, reference values are sha256", bank))
	}
	var out []attest.Check
	add := func(name string, err error, detail string) {
		c := attest.Check{Name: name, OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
		}
		out = append(out, c)
	}

	// Agent register: the launch prefix of the (already replayed) log,
	// without its storage events, must give the reference launch value.
	launch, predicted, agentErr := agentLaunch(recs, bank, rv)
	detail := fmt.Sprintf("%s launch events match the reference (%d events)", rv.Agent.Register, len(launch))
	if n := len(launch) - len(predicted); n > 0 {
		detail = fmt.Sprintf("%s launch events match the reference (%d events, and %d storage event(s), which reference values do not predict: see the storage policy checks)", rv.Agent.Register, len(predicted), n)
	}
	detail += prebootDetail(rv.Agent.Events)
	add(CheckRefAgentRegister, agentErr, detail)

	if rv.RootHash != "" {
		var rhErr error
		if launch == nil {
			rhErr = errors.New("no authenticated launch events (see " + CheckRefAgentRegister + ")")
		} else if im, err := launchImage(launch); err != nil {
			rhErr = err
		} else if im.RootHash != rv.RootHash {
			rhErr = fmt.Errorf("the image was booted with roothash %q, reference %s", im.RootHash, rv.RootHash)
		}
		add(CheckRefRootHash, rhErr, "dm-verity root hash on the kernel command line is the reference "+short(rv.RootHash))
	}

	for _, i := range pcrs {
		name := CheckRefPCRPrefix + strconv.Itoa(i)
		want := rv.PCRs[strconv.Itoa(i)]
		got, ok := regs[measure.Register{Kind: "PCR", Index: i}]
		switch {
		case !ok:
			add(name, fmt.Errorf("PCR %d is not quoted", i), "")
		case hex.EncodeToString(got) != want:
			add(name, fmt.Errorf("PCR %d is %x, reference %s%s", i, got, want, r.explainPCR(i, got, rv)), "")
		default:
			add(name, nil, fmt.Sprintf("PCR %d is the reference %s", i, short(want)))
		}
	}
	return out
}

// agentLaunch compares the launch prefix of recs, without storage events,
// with the reference launch value. On a match it returns the prefix and
// the records compared.
func agentLaunch(recs []measure.Record, bank crypto.Hash, rv *ReferenceValues) (launch, predicted []measure.Record, err error) {
	reg, _ := measure.ParseRegister(rv.Agent.Register) // checked by OpenReference
	prefix, ok := measure.LaunchPrefix(recs)
	if !ok {
		return nil, nil, errors.New("the agent's event log has no launch separator")
	}
	if _, err := measure.Replay(prefix, bank, reg.Kind, reg.Index); err != nil {
		return nil, nil, fmt.Errorf("replay launch events: %w", err)
	}
	predicted = withoutStorage(prefix)
	v, err := launchValue(bank, predicted)
	if err != nil {
		return nil, nil, err
	}
	if got := hex.EncodeToString(v); got != rv.Agent.Launch {
		what := ""
		if len(predicted) < len(prefix) {
			what = " without storage events"
		}
		return nil, nil, fmt.Errorf("%s after launch%s is %s, reference %s%s", rv.Agent.Register, what, got, rv.Agent.Launch, diffEvents(predicted, rv.Agent.Events, bank))
	}
	return prefix, predicted, nil
}

// withoutStorage returns the launch records reference values can predict:
// all but the machine-specific ones (measure.EventType.MachineSpecific:
// the storage event records device numbers and mounts of the running
// system), so the reference launch value is the register over the others. Dropping the storage
// records before comparing is sound because the whole log, storage events
// included, was already authenticated: cel-replay replayed it to the quoted
// register, so every remaining record is exactly what attestd extended,
// in order. What the storage event says is appraised by the storage policy
// (storage-root-verity, storage-encrypted), not here.
func withoutStorage(recs []measure.Record) []measure.Record {
	out := make([]measure.Record, 0, len(recs))
	for _, r := range recs {
		if !r.Type.MachineSpecific() {
			out = append(out, r)
		}
	}
	return out
}

// launchValue is the register value (from zero) after the events of recs,
// which the caller has replayed (their digests are their contents', but for
// the preboot events at the start, whose digests are the firmware log's).
func launchValue(bank crypto.Hash, recs []measure.Record) ([]byte, error) {
	var pre []measure.PrebootMeasurement
	evs := make([]measure.Event, 0, len(recs))
	for _, r := range recs {
		if r.Type == measure.EventPreboot {
			pre = append(pre, measure.PrebootMeasurement{Event: measure.Event{Type: r.Type, Data: r.Data}, Digests: r.Digests})
			continue
		}
		evs = append(evs, measure.Event{Type: r.Type, Data: r.Data})
	}
	v, err := measure.PredictWithPreboot(bank, pre, evs)
	if err != nil {
		return nil, fmt.Errorf("launch events: %w", err)
	}
	return v, nil
}

// prebootDetail names the preboot events the reference predicts (the
// image's system extensions), for the check's detail.
func prebootDetail(want []ReferenceEvent) string {
	var names []string
	for _, e := range want {
		if e.SHA256 != "" {
			names = append(names, e.What)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "; preboot: " + strings.Join(names, "; ")
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

// diffEvents names the first launch event that differs from the reference;
// got are the launch records without storage events (withoutStorage).
func diffEvents(got []measure.Record, want []ReferenceEvent, bank crypto.Hash) string {
	for i, r := range got {
		if i >= len(want) {
			return fmt.Sprintf("; extra event %d (%s)", i, r.Type)
		}
		if r.Type == measure.EventPreboot && want[i].SHA256 != "" && hex.EncodeToString(r.Digests[bank]) != want[i].SHA256 {
			return fmt.Sprintf("; first difference at event %d: preboot %s with %v digest %x, reference %s (%s)", i, r.Data, bank, r.Digests[bank], want[i].SHA256, want[i].What)
		}
		if r.Type.String() != want[i].Type || !bytes.Equal(r.Data, want[i].Data) {
			return fmt.Sprintf("; first difference at event %d: %s %s, reference %s %s", i, r.Type, r.Data, want[i].Type, want[i].Data)
		}
	}
	if len(want) > len(got) {
		return fmt.Sprintf("; missing event %d (%s)", len(got), want[len(got)].Type)
	}
	return ""
}

// openSigned checks that raw (at most max bytes) is a DSSE envelope of an
// in-toto payload signed by one of keys, and returns the payload exactly
// as signed: the authenticity half of the signed statements the verifier
// reads besides attestations (reference values, image provenance).
func openSigned(raw []byte, max int, keys []crypto.PublicKey) ([]byte, error) {
	if len(raw) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	if len(keys) == 0 {
		return nil, errors.New("no key given")
	}
	env, err := scai.ParseEnvelope(raw) // also requires the in-toto payload type
	if err != nil {
		return nil, err
	}
	var sigErr error
	for _, k := range keys {
		if sigErr = scai.VerifySignature(env, k); sigErr == nil {
			break
		}
	}
	if sigErr != nil {
		return nil, fmt.Errorf("not signed by the given key(s): %w", sigErr)
	}
	// Decoded as the DSSE verifier decoded it: these are the signed bytes.
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", scai.ErrEnvelope, err)
	}
	return payload, nil
}

// explainPCR says which firmware-log event makes PCR i differ from the
// reference: the authenticated firmware log's events for i (when they
// replay to its quoted value got) against the predicted ones. "" when
// there is no log to explain it.
func (r *Result) explainPCR(i int, got []byte, rv *ReferenceValues) string {
	if r.firmware == nil {
		return " (no firmware event log to explain it)"
	}
	all, err := measure.ParseFirmwareLog(r.firmware)
	if err != nil {
		return fmt.Sprintf(" (the firmware event log does not parse: %v)", err)
	}
	var evs []measure.FirmwareEvent
	for _, e := range all {
		if e.PCR == i {
			evs = append(evs, e)
		}
	}
	if !bytes.Equal(measure.PCRValue(crypto.SHA256, evs), got) {
		return fmt.Sprintf(" (the firmware event log's %d event(s) for PCR %d do not replay to it: it was extended without a log entry)", len(evs), i)
	}
	var want []BootEvent
	if rv.Boot != nil {
		want = rv.Boot.Events[strconv.Itoa(i)]
	}
	describe := func(e measure.FirmwareEvent) string {
		s := e.Type
		if e.What != "" {
			s += fmt.Sprintf(" %q", e.What)
		}
		return s + " " + short(hex.EncodeToString(e.Digest))
	}
	for k := 0; k < len(evs) || k < len(want); k++ {
		switch {
		case k >= len(evs):
			return fmt.Sprintf(": the firmware log ends after %d event(s); the reference has %s %q next", len(evs), want[k].Type, want[k].What)
		case len(want) == 0:
			return fmt.Sprintf(": the reference predicts no event; the firmware log has %d, the first: %s", len(evs), describe(evs[0]))
		case k >= len(want):
			return fmt.Sprintf(": the firmware log has %d event(s) more than the reference, from event %d: %s", len(evs)-len(want), k, describe(evs[k]))
		case want[k].SHA256 != hex.EncodeToString(evs[k].Digest):
			return fmt.Sprintf(": first difference at firmware-log event %d of PCR %d: %s, the reference has %s %q %s", k, i, describe(evs[k]), want[k].Type, want[k].What, short(want[k].SHA256))
		}
	}
	return ""
}
