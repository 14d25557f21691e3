package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/attestd/attestd/internal/boundedfile"
)

// StateName is the directory in the runtime dir that keeps this boot's
// attestations, one file each: each is written once (atomically, renamed into place)
// when it is made and never rewritten, so a call costs one small write and
// a restart loses nothing.
const StateName = "state"

// File names inside the state directory.
const (
	stateDispatch  = "dispatch.json"
	stateComplete  = "complete.json"
	stateAdmission = "admission-" // + 9-digit sequence + ".json"
	stateSigned    = "signed-"    // + 9-digit sequence + ".json"
	stateProof     = "proof-"     // + the admission's sequence + ".json": its inclusion proof, if batched
)

// errStorage marks a failure to write the runtime dir (a full disk, an I/O
// error). Callers get codes.Unavailable: the request was fine and may be
// retried once space is freed.
var errStorage = errors.New("runtime directory not writable")

// stateDir is the state directory of a runtime dir.
func stateDir(runtimeDir string) string { return filepath.Join(runtimeDir, StateName) }

// setAsideState moves the state of an earlier boot out of the way (to
// state.stale, replacing an older one).
func setAsideState(runtimeDir string) error {
	dir := stateDir(runtimeDir)
	if err := os.RemoveAll(dir + ".stale"); err != nil {
		return fmt.Errorf("set aside state: %w", err)
	}
	if err := os.Rename(dir, dir+".stale"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("set aside state: %w", err)
	}
	return nil
}

// saved is what the state directory holds.
type saved struct {
	Dispatch   []byte
	Complete   []byte
	Signed     [][]byte
	Admissions []kept
	// next sequence numbers for admission and signed files
	nextAdmission, nextSigned int
}

// kept is an admission attestation kept for the bundle: the envelope and,
// when it answered several callers, one caller's inclusion proof.
type kept struct {
	Envelope []byte
	Proof    []byte
}

// readState reads the state directory (empty if there is none). Every file
// is bounded by the largest attestation the daemon makes.
func readState(runtimeDir string) (saved, error) {
	var st saved
	dir := stateDir(runtimeDir)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read state: %w", err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	proofs := map[int][]byte{}
	admissionSeq := map[int]int{} // sequence → index in st.Admissions
	for _, name := range names {
		raw, err := boundedfile.Read(filepath.Join(dir, name), maxStoredFile)
		if err != nil {
			return st, fmt.Errorf("read state: %w", err)
		}
		var seq int
		switch {
		case name == stateDispatch:
			st.Dispatch = raw
		case name == stateComplete:
			st.Complete = raw
		case sequenced(name, stateAdmission, &seq):
			admissionSeq[seq] = len(st.Admissions)
			st.Admissions = append(st.Admissions, kept{Envelope: raw})
			st.nextAdmission = seq + 1
		case sequenced(name, stateProof, &seq):
			proofs[seq] = raw
		case sequenced(name, stateSigned, &seq):
			st.Signed = append(st.Signed, raw)
			st.nextSigned = seq + 1
		default:
			return st, fmt.Errorf("read state: unexpected file %s in %s", name, dir)
		}
	}
	for seq, p := range proofs {
		i, ok := admissionSeq[seq]
		if !ok {
			return st, fmt.Errorf("read state: %s without its admission in %s", seqName(stateProof, seq), dir)
		}
		st.Admissions[i].Proof = p
	}
	return st, nil
}

// sequenced parses prefix + NNN + ".json".
func sequenced(name, prefix string, seq *int) bool {
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok {
		return false
	}
	rest, ok = strings.CutSuffix(rest, ".json")
	if !ok || len(rest) != 9 {
		return false
	}
	_, err := fmt.Sscanf(rest, "%09d", seq)
	return err == nil
}

// putState writes one attestation file in the state directory.
func putState(runtimeDir, name string, b []byte) error {
	dir := stateDir(runtimeDir)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	if err := writeRuntimeFile(filepath.Join(dir, name), b, 0o640); err != nil {
		return fmt.Errorf("%w: save %s: %w", errStorage, name, err)
	}
	return nil
}

// removeState removes one file of the state directory (an admission that
// fell out of the kept window).
func removeState(runtimeDir, name string) error {
	if err := os.Remove(filepath.Join(stateDir(runtimeDir), name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	return nil
}

func seqName(prefix string, seq int) string { return fmt.Sprintf("%s%09d.json", prefix, seq) }
