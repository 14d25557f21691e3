// Package agent is the attestd daemon core: it measures the launch of the
// build environment into the agent register, keeps the event log, makes the
// launch attestation and serves the local gRPC API on a unix socket.
package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// File names inside the runtime directory.
const (
	SocketName       = "attestd.sock"
	EventLogName     = "attestd.cel"
	LaunchAttestName = "launch.intoto.jsonl" // the launch attestation and the event log it names
	KeyFileName      = "envkey.blob"
)

// Options wires an Agent. Backend and Config are required.
type Options struct {
	Config  *Config
	Backend attest.Backend
	// Extra are further evidence sources (a TEE beside a vTPM); their
	// evidence joins the backend's in every attestation.
	Extra []attest.EvidenceSource
	// RuntimeDir holds the socket, the event log and the launch attestation.
	RuntimeDir string
	// BinaryPath is the running daemon binary, measured at launch.
	BinaryPath string
	// Cmdline is the kernel command line (for roothash=/usrhash=).
	Cmdline string
	// Storage is the storage layout measured at launch (StorageProbe); nil
	// records no storage event.
	Storage *measure.StorageMeasurement
	// FirmwareLogPath is the firmware's TCG event log, read at start when
	// the register is not zero (DefaultFirmwareLogPath if empty): events on
	// the register that it explains are recorded as preboot events.
	FirmwareLogPath string
	Version         string
	Logger          *slog.Logger

	now       func() time.Time
	startTime func(pid int32) (uint64, error) // process start time, for the PID-reuse guard
}

// Agent is the daemon core. Its methods are safe for concurrent use.
type Agent struct {
	opts      Options
	log       *slog.Logger
	backend   attest.Backend
	keyDigest [32]byte
	allow     Allowlist

	health *deviceHealth

	mu     sync.Mutex // serialises backend use and the event log
	events *measure.Log
	launch atomic.Pointer[Attestation] // the launch attestation, exactly as signed, and its event log; set once by Launch
	state  lifecycle                   // the one build of this environment

	batch batcher // Attest callers waiting for a quote
	// pendingKeeps counts admissions answered but not yet kept for the
	// bundle; kept (on mu) is signalled when it drops.
	pendingKeeps int
	kept         *sync.Cond
}

// New checks opts and opens the event log. It does not touch the register.
func New(opts Options) (*Agent, error) {
	if opts.Config == nil || opts.Backend == nil {
		return nil, errors.New("agent: config and backend are required")
	}
	if opts.RuntimeDir == "" {
		return nil, errors.New("agent: runtime directory is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	if opts.startTime == nil {
		opts.startTime = procStartTime
	}
	if reg := opts.Backend.Register(); reg.Kind == measure.PCR && reg.Index != opts.Config.Register {
		return nil, fmt.Errorf("agent: backend extends %s but config says PCR%d", reg, opts.Config.Register)
	}
	kd, err := attest.KeyDigest(opts.Backend.Signer().Public())
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := os.MkdirAll(opts.RuntimeDir, 0o750); err != nil {
		return nil, fmt.Errorf("create runtime dir: %w", err)
	}
	a := &Agent{
		opts:      opts,
		log:       opts.Logger,
		backend:   opts.Backend,
		keyDigest: kd,
		health:    newDeviceHealth(opts.Logger, opts.Backend.Name()),
		allow:     Allowlist{Readers: opts.Config.Readers, Executors: opts.Config.Builders, self: uint32(os.Getuid())},
	}
	a.kept = sync.NewCond(&a.mu)
	return a, nil
}

// KeyDigest is the SHA-256 of the env key's PKIX encoding.
func (a *Agent) KeyDigest() [32]byte { return a.keyDigest }

// LaunchAttestation returns the launch attestation envelope (nil before Launch).
func (a *Agent) LaunchAttestation() []byte {
	if l := a.launchAttestation(); l != nil {
		return l.Envelope
	}
	return nil
}

// launchAttestation returns the launch attestation and the event log it
// names (nil before Launch).
func (a *Agent) launchAttestation() *Attestation { return a.launch.Load() }

// Launch measures the environment (or, after a restart in the same boot,
// records the restart and what it repaired), freezes launch measurements
// with the separator, makes the launch attestation and writes it to the
// runtime dir.
func (a *Agent) Launch(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	rec, err := a.openLog(ctx)
	if err != nil {
		return err
	}
	switch {
	case a.events.Frozen():
		if err := a.recordRestart(ctx, rec); err != nil {
			return err
		}
	case a.events.Len() > a.events.Preboot():
		// The daemon died during an earlier launch: say so, then measure
		// the launch again, whole (verifiers fail such a launch).
		rec.InterruptedLaunch = true
		if err := a.recordRestart(ctx, rec); err != nil {
			return err
		}
		if err := a.measureLaunch(ctx); err != nil {
			return err
		}
	default:
		if err := a.measureLaunch(ctx); err != nil {
			return err
		}
	}
	if err := a.loadState(); err != nil {
		return err
	}
	att, err := a.attestLocked(ctx, scai.Attestation{Purpose: attest.PurposeLaunch})
	if err != nil {
		return fmt.Errorf("launch attestation: %w", err)
	}
	if err := writeRuntimeFile(filepath.Join(a.opts.RuntimeDir, LaunchAttestName), att.Encode(), 0o640); err != nil {
		return fmt.Errorf("write launch attestation: %w", err)
	}
	a.launch.Store(att)
	a.log.Info("launch attestation written", "path", filepath.Join(a.opts.RuntimeDir, LaunchAttestName),
		"env_key_sha256", hex.EncodeToString(a.keyDigest[:]), "register", a.backend.Register().String())
	return nil
}

// openLog opens the event log and brings it in step with the register: the
// same boot (replay matches: continue), a fresh start in a new boot (the
// register holds nothing of attestd's: it is zero, or exactly what the
// firmware log says was measured into it before attestd ran, which becomes
// the first, preboot, records; an old log is stale and set aside), a crash
// between writing a record and extending it (the log is one record ahead:
// extend it now and report it in rec), or none of these (refuse: the
// register holds events nobody can account for).
func (a *Agent) openLog(ctx context.Context) (rec measure.Recovery, err error) {
	reg := a.backend.Register()
	path := filepath.Join(a.opts.RuntimeDir, EventLogName)
	current, err := a.readRegister(ctx)
	if err != nil {
		return rec, err
	}
	bank := a.backend.Banks()[0]
	fresh := bytes.Equal(current[bank], make([]byte, bank.Size()))
	var (
		pre    []measure.PrebootMeasurement
		preErr error
	)
	if !fresh {
		pre, preErr = a.prebootEvents(current)
		fresh = preErr == nil
	}
	if fresh {
		// A new boot: whatever build state a runtime dir kept is stale.
		if err := setAsideState(a.opts.RuntimeDir); err != nil {
			return rec, err
		}
	}
	cfg := measure.LogConfig{Path: path, Index: reg.Index, Kind: reg.Kind, RepairTail: !fresh}
	l, err := measure.OpenLog(cfg)
	if err != nil {
		if !fresh {
			return rec, fmt.Errorf("open event log: %w", err)
		}
		a.log.Warn("unreadable event log from an earlier boot set aside", "path", path, "err", err)
		if l, err = reopenLog(cfg); err != nil {
			return rec, err
		}
	}
	rec.DroppedBytes = l.Dropped()
	if rec.DroppedBytes > 0 {
		a.log.Warn("partial record at the end of the event log cut off (the daemon died writing it; it never reached the register)",
			"path", path, "bytes", rec.DroppedBytes)
	}
	n := l.Len()
	switch {
	case n == 0 && fresh:
	case n == 0:
		l.Close()
		return rec, a.unexplainedRegister(current[bank], path, preErr)
	case fresh:
		a.log.Warn("event log from an earlier boot set aside", "path", path, "records", n)
		if err := l.Reset(); err != nil {
			l.Close()
			return rec, err
		}
	default:
		if rec.CompletedSeq, err = a.catchUp(ctx, l.Records(), current); err != nil {
			l.Close()
			return rec, fmt.Errorf("event log %s does not explain %s (%w); reboot the environment", path, reg, err)
		}
		a.log.Info("restart in the same boot: event log matches register", "records", n)
	}
	if fresh {
		if err := a.recordPreboot(l, pre); err != nil {
			l.Close()
			return rec, err
		}
	}
	a.events = l
	return rec, nil
}

// Close waits for admissions still being kept for the bundle and closes the
// event log; the Agent records nothing afterwards.
func (a *Agent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.pendingKeeps > 0 {
		a.kept.Wait()
	}
	if a.events == nil {
		return nil
	}
	return a.events.Close()
}

// readRegister reads the agent register in every bank.
func (a *Agent) readRegister(ctx context.Context) (map[crypto.Hash][]byte, error) {
	out := map[crypto.Hash][]byte{}
	for _, h := range a.backend.Banks() {
		v, err := a.backend.Read(ctx, h)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", a.backend.Register(), err)
		}
		out[h] = v
	}
	return out, nil
}

// catchUp checks the log replays to the register in every bank. A log one
// record ahead of the register in every bank is the trace of a crash
// between syncing a record and extending it: no caller was ever answered
// for that record, and the record is exactly what the log says, so it is
// extended now and its sequence number returned. Anything else is an error.
func (a *Agent) catchUp(ctx context.Context, recs []measure.Record, current map[crypto.Hash][]byte) (*uint64, error) {
	reg := a.backend.Register()
	ahead := 0
	for _, h := range a.backend.Banks() {
		vals, err := measure.ReplayPrefixes(recs, h, reg.Kind, reg.Index, []int{len(recs) - 1, len(recs)})
		if err != nil {
			return nil, err
		}
		switch {
		case bytes.Equal(vals[1], current[h]):
			continue
		case bytes.Equal(vals[0], current[h]):
			ahead++
		default:
			return nil, &measure.ReplayMismatchError{Register: fmt.Sprintf("%s%d", reg.Kind, reg.Index), Bank: h, Got: vals[1], Want: current[h]}
		}
	}
	switch ahead {
	case 0:
		return nil, nil
	case len(a.backend.Banks()):
	default:
		return nil, fmt.Errorf("the register's banks disagree: %d of %d lack the last record", ahead, len(a.backend.Banks()))
	}
	last := recs[len(recs)-1]
	if last.Type == measure.EventPreboot {
		// attestd never extends those: the register must hold them already.
		return nil, fmt.Errorf("the register lacks preboot record %d, which it held before attestd started", last.Seq)
	}
	if err := a.backend.Extend(ctx, last.Digests); err != nil {
		return nil, fmt.Errorf("extend record %d that the register lacks: %w", last.Seq, err)
	}
	a.log.Warn("the daemon died between logging and extending a record: extended it now", "seq", last.Seq, "type", last.Type.String())
	seq := last.Seq
	return &seq, nil
}

// reopenLog sets the log file at cfg.Path aside and opens a new, empty one.
func reopenLog(cfg measure.LogConfig) (*measure.Log, error) {
	if err := os.Rename(cfg.Path, cfg.Path+".stale"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("set aside event log: %w", err)
	}
	l, err := measure.OpenLog(cfg)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	return l, nil
}

func (a *Agent) measureLaunch(ctx context.Context) error {
	c := a.opts.Config
	var evs []measure.Event
	// measure's errors say what they measured ("measure config: …").
	ev, err := measure.BinaryEvent(a.opts.BinaryPath)
	if err != nil {
		return err
	}
	evs = append(evs, ev)
	if ev, err = measure.ConfigEvent(c.Path, c.Raw); err != nil {
		return err
	}
	evs = append(evs, ev)
	if ev, err = measure.ImageEvent(c.ImageMetadata, a.opts.Cmdline); err != nil {
		return fmt.Errorf("measure image: %w", err)
	}
	evs = append(evs, ev)
	if a.opts.Storage != nil {
		if ev, err = measure.StorageEvent(*a.opts.Storage); err != nil {
			return fmt.Errorf("measure storage: %w", err)
		}
		evs = append(evs, ev)
	}
	for _, p := range c.Executors {
		if ev, err = measure.ExecutorEvent(p); err != nil {
			return err
		}
		evs = append(evs, ev)
	}
	evs = append(evs, measure.SeparatorEvent())
	for _, ev := range evs {
		if err := a.events.Record(ctx, a.backend, ev); err != nil {
			return fmt.Errorf("record %s event: %w", ev.Type, err)
		}
	}
	a.log.Info("launch measured", "events", len(evs), "register", a.backend.Register().String())
	return nil
}

func (a *Agent) recordRestart(ctx context.Context, rec measure.Recovery) error {
	bin, err := measure.FileSHA256(a.opts.BinaryPath)
	if err != nil {
		return fmt.Errorf("measure binary: %w", err)
	}
	if err := a.events.Record(ctx, a.backend, measure.RestartEvent(bin, sha256.Sum256(a.opts.Config.Raw), rec)); err != nil {
		return fmt.Errorf("record restart event: %w", err)
	}
	a.log.Warn("daemon restarted within the same boot; restart recorded in the event log",
		"interrupted_launch", rec.InterruptedLaunch, "completed_record", rec.CompletedSeq != nil, "dropped_bytes", rec.DroppedBytes)
	return nil
}

// keepAdmission stores an admission attestation (and its proof, if batched)
// for the bundle, keeping the newest maxAdmissions. a.mu must be held.
func (a *Agent) keepAdmission(att *Attestation) error {
	st := &a.state.saved
	seq := st.nextAdmission
	if err := putState(a.opts.RuntimeDir, seqName(stateAdmission, seq), att.Envelope); err != nil {
		return err
	}
	if att.Proof != nil {
		if err := putState(a.opts.RuntimeDir, seqName(stateProof, seq), att.Proof); err != nil {
			return err
		}
	}
	st.nextAdmission++
	st.Admissions = append(st.Admissions, kept{Envelope: att.Envelope, Proof: att.Proof})
	if n := len(st.Admissions); n > maxAdmissions {
		st.Admissions = slices.Clone(st.Admissions[n-maxAdmissions:])
		old := st.nextAdmission - maxAdmissions - 1
		for _, name := range []string{seqName(stateAdmission, old), seqName(stateProof, old)} {
			if err := removeState(a.opts.RuntimeDir, name); err != nil {
				return err
			}
		}
	}
	return nil
}

var errNotLaunched = errors.New("launch not measured yet")

// attestLocked makes evidence for what partial asks (purpose, and the nonce,
// build or batch it carries) and wraps it as a signed SCAI statement naming
// the event log as it is now. a.mu must be held: the log must not grow
// between taking its reference and the quote.
func (a *Agent) attestLocked(ctx context.Context, partial scai.Attestation) (*Attestation, error) {
	if len(partial.Nonce) == 0 {
		partial.Nonce = nil
	}
	att := partial
	att.EnvKey = a.backend.Signer().Public()
	binding, err := scai.ExpectedBinding(&att)
	if err != nil {
		return nil, fmt.Errorf("binding: %w", err)
	}
	ev, err := a.backend.Evidence(ctx, binding)
	if err != nil {
		return nil, fmt.Errorf("evidence: %w", err)
	}
	evs := []*attest.Evidence{ev}
	for _, src := range a.opts.Extra {
		e, err := src.Evidence(ctx, binding)
		if err != nil {
			return nil, fmt.Errorf("%s evidence: %w", src.Name(), err)
		}
		evs = append(evs, e)
	}
	cel, sum := a.events.Ref() // cel is read-only, and never changed: records go after it
	att.Binding, att.Evidence, att.Log = binding, evs, scai.LogRef{SHA256: sum, Size: int64(len(cel))}
	att.Producer = scai.Producer{Name: "attestd", Version: a.opts.Version}
	att.Time = a.opts.now().UTC()
	payload, err := scai.Encode(&att)
	if err != nil {
		return nil, fmt.Errorf("statement: %w", err)
	}
	env, err := scai.SignPayload(ctx, a.backend.Signer(), payload)
	if err != nil {
		return nil, fmt.Errorf("sign statement: %w", err)
	}
	return &Attestation{Envelope: env, EventLog: cel}, nil
}

// EventLog returns the CEL encoding and the decoded records.
func (a *Agent) EventLog() ([]byte, []measure.Record) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.events == nil {
		return nil, nil
	}
	return a.events.View(), a.events.Records()
}

// writeRuntimeFile writes a file of the runtime directory atomically (a
// temporary file renamed over path) but does not sync it: what the runtime
// directory keeps must survive a crash of the daemon, which the page cache
// does, and must never survive a reboot (registers reset, the state is set
// aside), so a sync buys nothing and costs milliseconds on a disk
// (docs/robustness.md, "Durability").
func writeRuntimeFile(path string, b []byte, mode os.FileMode) error {
	return writeFile(path, b, mode, false)
}

// writeFileAtomic writes b to a temporary file beside path, syncs it and
// renames it over path.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	return writeFile(path, b, mode, true)
}

func writeFile(path string, b []byte, mode os.FileMode, sync bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

const sha256Hash = crypto.SHA256
