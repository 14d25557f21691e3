package scai

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/attestd/attestd/attest"
)

// LogRef names the prefix of the agent's event log (CEL-TLV) an attestation
// covers: its first Size bytes, whose SHA-256 is SHA256. The log itself
// travels once per bundle (LogEnvelope) and is authenticated by this digest
// and by replay to the quoted register, not by a signature of its own.
type LogRef struct {
	SHA256 [32]byte
	Size   int64
}

// RefTo returns the LogRef of the whole of cel.
func RefTo(cel []byte) LogRef { return LogRef{SHA256: sha256.Sum256(cel), Size: int64(len(cel))} }

// Batch says an admission (attest) attestation answers several callers with
// one quote: the binding is attest.BatchBinding(keyDigest, Root, Size), and
// each caller holds an InclusionProof of its nonce. See docs/formats.md.
type Batch struct {
	Root [32]byte
	Size int // leaves, 2 to attest.MaxBatch
}

// Payload types of the unsigned lines a bundle may carry beside the signed
// attestations. Both are authenticated by reference: the event log by the
// LogRef digests of the signed statements, a proof by the batch root.
const (
	// PayloadTypeCEL: the payload is the agent's event log, CEL-TLV.
	PayloadTypeCEL = MediaTypeCEL
	// PayloadTypeInclusionProof: the payload is an InclusionProof (JSON).
	PayloadTypeInclusionProof = "application/vnd.attestd.inclusion-proof+json"
)

// InclusionProof shows that one caller's nonce is a leaf of a batch: the leaf
// attest.BatchLeaf(keyDigest, Nonce) at Index, with the audit Path, leads to
// Root, which a batched attestation of the same env key carries.
type InclusionProof struct {
	KeyDigest [32]byte
	Nonce     []byte
	Index     int
	Size      int
	Path      [][32]byte
	Root      [32]byte
}

// Check recomputes the root from the proof's nonce and path.
func (p *InclusionProof) Check() error {
	if err := attest.CheckNonce(p.Nonce); err != nil {
		return fmt.Errorf("%w: %v", attest.ErrInclusion, err)
	}
	root, err := attest.RootFromProof(attest.BatchLeaf(p.KeyDigest, p.Nonce), p.Index, p.Size, p.Path)
	if err != nil {
		return err
	}
	if root != p.Root {
		return fmt.Errorf("%w: the nonce's leaf and path lead to %x, not %x", attest.ErrInclusion, root[:8], p.Root[:8])
	}
	return nil
}

// proofJSON is the wire form of an InclusionProof.
type proofJSON struct {
	KeyDigest string   `json:"envKeySha256"`
	Nonce     string   `json:"nonce"`
	Index     int      `json:"leafIndex"`
	Size      int      `json:"batchSize"`
	Path      []string `json:"path"`
	Root      string   `json:"batchRoot"`
}

// MarshalJSON writes the proof with lower-case hex values.
func (p InclusionProof) MarshalJSON() ([]byte, error) {
	j := proofJSON{
		KeyDigest: hex.EncodeToString(p.KeyDigest[:]), Nonce: hex.EncodeToString(p.Nonce),
		Index: p.Index, Size: p.Size, Path: make([]string, len(p.Path)), Root: hex.EncodeToString(p.Root[:]),
	}
	for i, h := range p.Path {
		j.Path[i] = hex.EncodeToString(h[:])
	}
	return json.Marshal(j)
}

// ParseInclusionProof decodes a proof strictly (known fields only, lower-case
// hex, at most attest.MaxBatch leaves) and checks it against its own root.
func ParseInclusionProof(b []byte) (*InclusionProof, error) {
	var j proofJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: inclusion proof: %v", ErrEnvelope, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: inclusion proof: trailing data", ErrEnvelope)
	}
	p := &InclusionProof{Index: j.Index, Size: j.Size}
	var err error
	if p.KeyDigest, err = hex32(j.KeyDigest); err != nil {
		return nil, fmt.Errorf("%w: inclusion proof: envKeySha256: %v", ErrEnvelope, err)
	}
	if p.Root, err = hex32(j.Root); err != nil {
		return nil, fmt.Errorf("%w: inclusion proof: batchRoot: %v", ErrEnvelope, err)
	}
	if p.Nonce, err = hex.DecodeString(j.Nonce); err != nil || hex.EncodeToString(p.Nonce) != j.Nonce {
		return nil, fmt.Errorf("%w: inclusion proof: nonce is not lower-case hex", ErrEnvelope)
	}
	if len(j.Path) > 8 {
		return nil, fmt.Errorf("%w: inclusion proof: path of %d hashes", ErrEnvelope, len(j.Path))
	}
	for i, h := range j.Path {
		d, err := hex32(h)
		if err != nil {
			return nil, fmt.Errorf("%w: inclusion proof: path %d: %v", ErrEnvelope, i, err)
		}
		p.Path = append(p.Path, d)
	}
	if err := p.Check(); err != nil {
		return nil, err
	}
	return p, nil
}

func hex32(s string) ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 || hex.EncodeToString(b) != s {
		return d, fmt.Errorf("not 64 lower-case hex digits")
	}
	copy(d[:], b)
	return d, nil
}

// Carrier returns the unsigned bundle line that carries payload (an event log
// or an inclusion proof) beside the signed attestations. Consumers that do
// not know its payload type ignore it, as the in-toto bundle specification
// asks.
func Carrier(payloadType string, payload []byte) []byte {
	b, _ := json.Marshal(struct {
		PayloadType string           `json:"payloadType"`
		Payload     string           `json:"payload"`
		Signatures  []dsse.Signature `json:"signatures"`
	}{payloadType, base64.StdEncoding.EncodeToString(payload), []dsse.Signature{}})
	return b
}

// Bundle is what a bundle holds, sorted by kind: the signed envelopes (attestd
// attestations and statements the environment signed), the event logs and the
// inclusion proofs.
type Bundle struct {
	Envelopes []*dsse.Envelope
	Logs      [][]byte
	Proofs    []*InclusionProof
}

// DecodeBundle parses a bundle (ParseBundle) and sorts its lines: signed
// in-toto envelopes, event logs, inclusion proofs.
func DecodeBundle(raw []byte) (*Bundle, error) {
	envs, err := ParseBundle(raw)
	if err != nil {
		return nil, err
	}
	b := &Bundle{}
	for i, env := range envs {
		switch env.PayloadType {
		case PayloadType:
			b.Envelopes = append(b.Envelopes, env)
		case PayloadTypeCEL:
			p, err := env.DecodeB64Payload()
			if err != nil {
				return nil, fmt.Errorf("%w: envelope %d: event log: %v", ErrEnvelope, i+1, err)
			}
			b.Logs = append(b.Logs, p)
		case PayloadTypeInclusionProof:
			p, err := env.DecodeB64Payload()
			if err != nil {
				return nil, fmt.Errorf("%w: envelope %d: inclusion proof: %v", ErrEnvelope, i+1, err)
			}
			proof, err := ParseInclusionProof(p)
			if err != nil {
				return nil, fmt.Errorf("envelope %d: %w", i+1, err)
			}
			b.Proofs = append(b.Proofs, proof)
		}
	}
	return b, nil
}

// FindLog returns the first size bytes of the first log among logs whose
// prefix matches ref, or false.
func FindLog(logs [][]byte, ref LogRef) ([]byte, bool) {
	for _, l := range logs {
		if ref.Size <= int64(len(l)) && sha256.Sum256(l[:ref.Size]) == ref.SHA256 {
			return l[:ref.Size], true
		}
	}
	return nil, false
}

// AttestationLines is one attestation as a JSON Lines bundle that verifies on
// its own: the envelope, the inclusion proof of a batched admission (if any)
// and the event log it names (if any), as carriers.
func AttestationLines(envelope, eventLog, proof []byte) []byte {
	lines := [][]byte{envelope}
	if len(proof) > 0 {
		lines = append(lines, Carrier(PayloadTypeInclusionProof, proof))
	}
	if len(eventLog) > 0 {
		lines = append(lines, Carrier(PayloadTypeCEL, eventLog))
	}
	return EncodeBundle(lines...)
}

// EncodeBundle writes lines (envelopes and carriers, each one JSON value) as
// JSON Lines.
func EncodeBundle(lines ...[]byte) []byte {
	var out bytes.Buffer
	for _, l := range lines {
		if len(l) == 0 {
			continue
		}
		out.Write(bytes.TrimSpace(l))
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func sizeString(n int64) string { return strconv.FormatInt(n, 10) }
