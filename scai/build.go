package scai

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/attest"
)

// Build is what dispatch and completion attestations say about the build
// they are bound to.
type Build struct {
	// ID is the build ID the platform assigned (attest.CheckBuildID).
	ID string
	// Request describes the build at dispatch: source URI and digest,
	// entry point, tenant, whatever the platform passes. Dispatch only.
	Request []*ita.ResourceDescriptor
	// Inputs and Outputs are the build's materials and products, each with
	// at least one digest. Complete only; Outputs are the statement's
	// subjects.
	Inputs  []*ita.ResourceDescriptor
	Outputs []*ita.ResourceDescriptor
}

// Limits on build descriptors.
const (
	// MaxDescriptors bounds each descriptor list.
	MaxDescriptors = 256
	// MaxDescriptorSize bounds one descriptor's canonical JSON encoding.
	MaxDescriptorSize = 8 << 10
)

// ErrDescriptor: a build request, input or output descriptor is malformed.
var ErrDescriptor = errors.New("bad resource descriptor")

// Attribute names of the build descriptors (see docs/formats.md).
const (
	AttrBuildRequest = "attestd.dev/build/request"
	AttrBuildInput   = "attestd.dev/build/input"
	AttrBuildOutput  = "attestd.dev/build/output"
)

// CheckDescriptors validates a descriptor list: at most MaxDescriptors,
// each valid per in-toto, digests of known algorithms in lower-case hex of
// the right length, and (when needDigest) at least one digest each.
func CheckDescriptors(what string, list []*ita.ResourceDescriptor, needDigest bool) error {
	_, err := checkDescriptors(what, list, needDigest)
	return err
}

// CheckRequest validates a dispatch's build request (CheckDescriptors, no
// digest required) and returns its RequestDigest, encoding each descriptor
// once.
func CheckRequest(request []*ita.ResourceDescriptor) ([32]byte, error) {
	c, err := checkDescriptors("request", request, false)
	if err != nil {
		return [32]byte{}, err
	}
	return digestCanon(labelRequest, c), nil
}

// CheckIO validates a completion's inputs and outputs (CheckDescriptors,
// digests required, at least one output) and returns their IODigest,
// encoding each descriptor once.
func CheckIO(inputs, outputs []*ita.ResourceDescriptor) ([32]byte, error) {
	in, out, err := checkIO(inputs, outputs)
	if err != nil {
		return [32]byte{}, err
	}
	return digestCanon(labelIO, in, out), nil
}

func checkIO(inputs, outputs []*ita.ResourceDescriptor) (in, out [][]byte, err error) {
	if len(outputs) == 0 {
		return nil, nil, fmt.Errorf("%w: a completion needs at least one output", ErrDescriptor)
	}
	if in, err = checkDescriptors("input", inputs, true); err != nil {
		return nil, nil, err
	}
	if out, err = checkDescriptors("output", outputs, true); err != nil {
		return nil, nil, err
	}
	return in, out, nil
}

// checkDescriptors is CheckDescriptors; it returns each descriptor's
// canonical JSON.
func checkDescriptors(what string, list []*ita.ResourceDescriptor, needDigest bool) ([][]byte, error) {
	if len(list) > MaxDescriptors {
		return nil, fmt.Errorf("%w: %d %s descriptors, at most %d", ErrDescriptor, len(list), what, MaxDescriptors)
	}
	canon := make([][]byte, len(list))
	for i, rd := range list {
		if rd == nil {
			return nil, fmt.Errorf("%w: %s %d is empty", ErrDescriptor, what, i)
		}
		if err := rd.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %s %d: %v", ErrDescriptor, what, i, err)
		}
		if needDigest && len(rd.GetDigest()) == 0 {
			return nil, fmt.Errorf("%w: %s %d (%q) has no digest", ErrDescriptor, what, i, rd.GetName())
		}
		// Validate checked hex and length for the algorithms in-toto knows;
		// refuse the others, MD5, and upper-case hex (two spellings of one
		// digest would make two descriptor digests).
		for alg, h := range rd.GetDigest() {
			if _, ok := ita.HashAlgorithms[alg]; !ok || alg == string(ita.AlgorithmMD5) {
				return nil, fmt.Errorf("%w: %s %d: unknown or weak digest algorithm %q", ErrDescriptor, what, i, alg)
			}
			if !isLowerHex(h) {
				return nil, fmt.Errorf("%w: %s %d: %s digest must be lower-case hex", ErrDescriptor, what, i, alg)
			}
		}
		c, err := canonicalDescriptor(rd)
		if err != nil {
			return nil, fmt.Errorf("%w: %s %d: %v", ErrDescriptor, what, i, err)
		}
		if len(c) > MaxDescriptorSize {
			return nil, fmt.Errorf("%w: %s %d is %d bytes, at most %d", ErrDescriptor, what, i, len(c), MaxDescriptorSize)
		}
		canon[i] = c
	}
	return canon, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Domain-separation labels of the descriptor digests.
const (
	labelRequest = "attestd build request v1"
	labelIO      = "attestd build io v1"
)

// canonicalList returns the canonical JSON of each descriptor, unchecked.
func canonicalList(list []*ita.ResourceDescriptor) ([][]byte, error) {
	out := make([][]byte, len(list))
	for i, rd := range list {
		c, err := canonicalDescriptor(rd)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrDescriptor, err)
		}
		out[i] = c
	}
	return out, nil
}

// digestCanon hashes labelled lists of canonical descriptor encodings:
//
//	SHA-256( label ‖ 0x00 ‖ for each list: u32be(n) ‖ for each descriptor: u32be(len(c)) ‖ c )
//
// where c is the descriptor's canonical JSON (keys sorted, no whitespace).
func digestCanon(label string, lists ...[][]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	var n [4]byte
	for _, l := range lists {
		binary.BigEndian.PutUint32(n[:], uint32(len(l)))
		h.Write(n[:])
		for _, c := range l {
			binary.BigEndian.PutUint32(n[:], uint32(len(c)))
			h.Write(n[:])
			h.Write(c)
		}
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// RequestDigest is the digest of a build request bound at dispatch. It
// does not validate the descriptors: CheckRequest does both.
func RequestDigest(req []*ita.ResourceDescriptor) ([32]byte, error) {
	c, err := canonicalList(req)
	if err != nil {
		return [32]byte{}, err
	}
	return digestCanon(labelRequest, c), nil
}

// IODigest is the digest of a build's inputs and outputs bound at
// completion. It does not validate the descriptors: CheckIO does both.
func IODigest(inputs, outputs []*ita.ResourceDescriptor) ([32]byte, error) {
	in, err := canonicalList(inputs)
	if err != nil {
		return [32]byte{}, err
	}
	out, err := canonicalList(outputs)
	if err != nil {
		return [32]byte{}, err
	}
	return digestCanon(labelIO, in, out), nil
}

// BindingData returns the data attest.Bind hashes for a's purpose: empty
// (launch), the nonce (attest), or attest.BuildData over the build ID, the
// request or inputs/outputs digest and the nonce (dispatch, complete).
func BindingData(a *Attestation) ([]byte, error) {
	switch a.Purpose {
	case attest.PurposeLaunch, attest.PurposeAttest:
		return a.Nonce, nil
	case attest.PurposeDispatch:
		if a.Build == nil {
			return nil, fmt.Errorf("dispatch attestation without a build")
		}
		d, err := RequestDigest(a.Build.Request)
		if err != nil {
			return nil, err
		}
		return attest.BuildData(a.Build.ID, d, a.Nonce), nil
	case attest.PurposeComplete:
		if a.Build == nil {
			return nil, fmt.Errorf("completion attestation without a build")
		}
		d, err := IODigest(a.Build.Inputs, a.Build.Outputs)
		if err != nil {
			return nil, err
		}
		return attest.BuildData(a.Build.ID, d, a.Nonce), nil
	default:
		return nil, fmt.Errorf("unknown purpose %q", a.Purpose)
	}
}

// ExpectedBinding is attest.Bind over a's purpose, env key and BindingData;
// for a batch, attest.BatchBinding over its root and size.
func ExpectedBinding(a *Attestation) (attest.Binding, error) {
	kd, err := attest.KeyDigest(a.EnvKey)
	if err != nil {
		return attest.Binding{}, fmt.Errorf("%w: %v", ErrEnvKey, err)
	}
	if a.Batch != nil {
		return attest.BatchBinding(kd, a.Batch.Root, a.Batch.Size), nil
	}
	data, err := BindingData(a)
	if err != nil {
		return attest.Binding{}, err
	}
	return attest.Bind(a.Purpose, kd, data), nil
}

// bindingFor is ExpectedBinding for a checked attestation whose key digest
// and build digest (zero without a build) are known.
func bindingFor(a *Attestation, kd, buildDigest [32]byte) attest.Binding {
	if a.Batch != nil {
		return attest.BatchBinding(kd, a.Batch.Root, a.Batch.Size)
	}
	switch a.Purpose {
	case attest.PurposeDispatch, attest.PurposeComplete:
		return attest.Bind(a.Purpose, kd, attest.BuildData(a.Build.ID, buildDigest, a.Nonce))
	default:
		return attest.Bind(a.Purpose, kd, a.Nonce)
	}
}

// SubjectAmong reports whether subject s names one of outputs: s has at
// least one digest, and one output has every digest s has, with equal
// values. Used to check that signed statements are about the build's outputs.
func SubjectAmong(s *ita.ResourceDescriptor, outputs []*ita.ResourceDescriptor) bool {
	if len(s.GetDigest()) == 0 {
		return false
	}
outer:
	for _, o := range outputs {
		for alg, v := range s.GetDigest() {
			if o.GetDigest()[alg] != v {
				continue outer
			}
		}
		return true
	}
	return false
}
