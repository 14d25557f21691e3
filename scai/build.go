package scai

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"

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
	if len(list) > MaxDescriptors {
		return fmt.Errorf("%w: %d %s descriptors, at most %d", ErrDescriptor, len(list), what, MaxDescriptors)
	}
	for i, rd := range list {
		if rd == nil {
			return fmt.Errorf("%w: %s %d is empty", ErrDescriptor, what, i)
		}
		if err := rd.Validate(); err != nil {
			return fmt.Errorf("%w: %s %d: %v", ErrDescriptor, what, i, err)
		}
		if needDigest && len(rd.GetDigest()) == 0 {
			return fmt.Errorf("%w: %s %d (%q) has no digest", ErrDescriptor, what, i, rd.GetName())
		}
		// Validate checked hex and length for the algorithms in-toto knows;
		// refuse the others, MD5, and upper-case hex (two spellings of one
		// digest would make two descriptor digests).
		for alg, h := range rd.GetDigest() {
			if _, ok := ita.HashAlgorithms[alg]; !ok || alg == string(ita.AlgorithmMD5) {
				return fmt.Errorf("%w: %s %d: unknown or weak digest algorithm %q", ErrDescriptor, what, i, alg)
			}
			if !isLowerHex(h) {
				return fmt.Errorf("%w: %s %d: %s digest must be lower-case hex", ErrDescriptor, what, i, alg)
			}
		}
		c, err := canonicalDescriptor(rd)
		if err != nil {
			return fmt.Errorf("%w: %s %d: %v", ErrDescriptor, what, i, err)
		}
		if len(c) > MaxDescriptorSize {
			return fmt.Errorf("%w: %s %d is %d bytes, at most %d", ErrDescriptor, what, i, len(c), MaxDescriptorSize)
		}
	}
	return nil
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

// canonicalDescriptor is the descriptor's JSON with object keys sorted and
// no insignificant whitespace (protojson, re-encoded by encoding/json).
func canonicalDescriptor(rd *ita.ResourceDescriptor) ([]byte, error) {
	b, err := protojson.Marshal(rd)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// digestLists hashes labelled descriptor lists:
//
//	SHA-256( label ‖ 0x00 ‖ for each list: u32be(n) ‖ for each descriptor: u32be(len(c)) ‖ c )
//
// where c is the descriptor's canonical JSON (keys sorted, no whitespace).
func digestLists(label string, lists ...[]*ita.ResourceDescriptor) ([32]byte, error) {
	h := sha256.New()
	h.Write([]byte(label))
	h.Write([]byte{0})
	for _, l := range lists {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(l))))
		for _, rd := range l {
			c, err := canonicalDescriptor(rd)
			if err != nil {
				return [32]byte{}, fmt.Errorf("%w: %v", ErrDescriptor, err)
			}
			h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(c))))
			h.Write(c)
		}
	}
	var d [32]byte
	copy(d[:], h.Sum(nil))
	return d, nil
}

// RequestDigest is the digest of a build request bound at dispatch.
func RequestDigest(req []*ita.ResourceDescriptor) ([32]byte, error) {
	return digestLists("attestd build request v1", req)
}

// IODigest is the digest of a build's inputs and outputs bound at completion.
func IODigest(inputs, outputs []*ita.ResourceDescriptor) ([32]byte, error) {
	return digestLists("attestd build io v1", inputs, outputs)
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
