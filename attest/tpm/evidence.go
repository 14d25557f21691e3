package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
)

// Part names of TPM evidence (see docs/formats.md).
const (
	PartAKPublic         = "tpm/ak-public"
	PartAKCert           = "tpm/ak-cert"
	PartEKCert           = "tpm/ek-cert"
	PartEnvKeyPublic     = "tpm/env-key-public"
	PartCertifyInfo      = "tpm/certify-info"
	PartCertifySignature = "tpm/certify-signature"
	PartQuoteInfo        = "tpm/quote-info"
	PartQuoteSignature   = "tpm/quote-signature"
	PartPCRs             = "tpm/pcrs"
	PartEventLog         = "tpm/eventlog"
)

// Media types of TPM evidence parts.
const (
	MediaTypeTPMTPublic    = "application/vnd.tcg.tpm2.tpmt-public"
	MediaTypeTPMSAttest    = "application/vnd.tcg.tpm2.tpms-attest"
	MediaTypeTPMTSignature = "application/vnd.tcg.tpm2.tpmt-signature"
	MediaTypePCRs          = "application/json"
	MediaTypeEventLog      = "application/vnd.tcg.pcclient-eventlog"
	MediaTypeCert          = "application/pkix-cert"
)

// PCRValues is the JSON form of the tpm/pcrs part:
//
//	{"hash":"sha256","pcrs":{"0":"<hex>","13":"<hex>"}}
//
// The keys are decimal PCR indices; values are lower-case hex.
type PCRValues struct {
	Hash string            `json:"hash"`
	PCRs map[string]string `json:"pcrs"`
}

// quoteAttempts bounds the quotes of one Evidence when a PCR changes
// between a quote and the read-back of the PCR values (another process
// extending a quoted PCR; see pcrs.go).
const quoteAttempts = 3

// Evidence implements attest.Backend: a quote by the AK over the SHA-256
// bank of the boot PCRs and the agent PCR with qualifying data binding,
// together with the AK's certification of the environment key. In the
// steady state it is one TPM command, TPM2_Quote: the PCR values come from
// what the backend keeps (pcrs.go), read back only when the quote shows
// they changed.
func (b *Backend) Evidence(ctx context.Context, binding attest.Binding) (_ *attest.Evidence, err error) {
	defer b.catch(&err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return nil, err
	}
	sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: b.cfg.quotedPCRs()}
	var (
		info, sig []byte
		pcrs      map[uint32][]byte
	)
	for range quoteAttempts {
		info, sig, pcrs, err = b.quote(sel, binding)
		if !errors.Is(err, errPCRsMoved) {
			break
		}
	}
	if errors.Is(err, errPCRsMoved) {
		return nil, err // another process extends a quoted PCR: not the TPM's fault
	}
	if err != nil {
		return nil, b.failed(err)
	}
	pcrJSON, err := encodePCRs(pcrs)
	if err != nil {
		return nil, err
	}
	ev := &attest.Evidence{Backend: b.Name()}
	add := func(name, mt string, data []byte) {
		if data != nil {
			ev.Parts = append(ev.Parts, attest.Part{Name: name, MediaType: mt, Data: bytes.Clone(data)})
		}
	}
	add(PartAKPublic, MediaTypeTPMTPublic, b.akPublic)
	add(PartAKCert, MediaTypeCert, b.akCert)
	add(PartEKCert, MediaTypeCert, b.ekCert)
	add(PartEnvKeyPublic, MediaTypeTPMTPublic, b.envPublic)
	add(PartCertifyInfo, MediaTypeTPMSAttest, b.certifyInfo)
	add(PartCertifySignature, MediaTypeTPMTSignature, b.certifySig)
	add(PartQuoteInfo, MediaTypeTPMSAttest, info)
	add(PartQuoteSignature, MediaTypeTPMTSignature, sig)
	add(PartPCRs, MediaTypePCRs, pcrJSON)
	add(PartEventLog, MediaTypeEventLog, b.firmwareLog)
	return ev, nil
}

var errPCRsMoved = errors.New("quoted PCRs changed while reading them back")

// quote runs TPM2_Quote, checks the TPM's answer, and returns it with the
// values of the quoted PCRs: the kept ones when they hash to the quote's
// PCR digest, else the values read back, which must (else errPCRsMoved).
func (b *Backend) quote(sel tpm2.PCRSelection, binding attest.Binding) (info, sig []byte, pcrs map[uint32][]byte, err error) {
	info, sig, err = tpm2.QuoteRaw(b.rw, b.ak.Handle(), "", "", binding[:], sel, tpm2.AlgNull)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("quote PCRs %v: %w", sel.PCRs, err)
	}
	ad, err := tpm2.DecodeAttestationData(info)
	if err != nil || ad.AttestedQuoteInfo == nil {
		return nil, nil, nil, fmt.Errorf("decode own quote: %v", err)
	}
	if !bytes.Equal(ad.ExtraData, binding[:]) {
		return nil, nil, nil, errors.New("own quote: qualifying data is not the binding asked for")
	}
	if q := ad.AttestedQuoteInfo.PCRSelection; q.Hash != sel.Hash || !slices.Equal(q.PCRs, sel.PCRs) {
		return nil, nil, nil, fmt.Errorf("own quote: PCRs %v (%v) quoted, not %v", q.PCRs, q.Hash, sel.PCRs)
	}
	if err := checkTPMSignature(b.ak.PublicKey(), info, sig); err != nil {
		return nil, nil, nil, fmt.Errorf("own quote: %w", err)
	}
	digest := ad.AttestedQuoteInfo.PCRDigest
	if !b.matches(sel.PCRs, digest) {
		// Values never read (the first quote) or changed by someone else:
		// read back what is missing, and if that does not explain the
		// quote, everything.
		missing := b.uncached(sel.PCRs)
		if len(missing) > 0 {
			if err := b.readPCRs(missing); err != nil {
				return nil, nil, nil, err
			}
		}
		if len(missing) < len(sel.PCRs) && !b.matches(sel.PCRs, digest) {
			if err := b.readPCRs(sel.PCRs); err != nil {
				return nil, nil, nil, err
			}
		}
		if !b.matches(sel.PCRs, digest) {
			return nil, nil, nil, errPCRsMoved
		}
	}
	return info, sig, b.quotedValues(sel.PCRs), nil
}

func encodePCRs(pcrs map[uint32][]byte) ([]byte, error) {
	v := PCRValues{Hash: "sha256", PCRs: map[string]string{}}
	for i, d := range pcrs {
		v.PCRs[strconv.Itoa(int(i))] = hex.EncodeToString(d)
	}
	return json.Marshal(v) // map keys are sorted: deterministic output
}

// decodePCRs parses the tpm/pcrs part; it returns the indices in ascending
// order and the values.
func decodePCRs(data []byte) ([]int, map[int][]byte, error) {
	var v PCRValues
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return nil, nil, fmt.Errorf("parse %s: %w", PartPCRs, err)
	}
	if v.Hash != "sha256" {
		return nil, nil, fmt.Errorf("%s: hash %q, want \"sha256\"", PartPCRs, v.Hash)
	}
	if len(v.PCRs) == 0 {
		return nil, nil, fmt.Errorf("%s: no PCR values", PartPCRs)
	}
	out := make(map[int][]byte, len(v.PCRs))
	var idx []int
	for k, s := range v.PCRs {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= client.NumPCRs || strconv.Itoa(i) != k {
			return nil, nil, fmt.Errorf("%s: bad PCR index %q", PartPCRs, k)
		}
		d, err := hex.DecodeString(s)
		if err != nil || len(d) != sha256.Size {
			return nil, nil, fmt.Errorf("%s: PCR %d: want %d bytes of hex", PartPCRs, i, sha256.Size)
		}
		out[i] = d
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx, out, nil
}

// checkTPMSignature checks a TPMT_SIGNATURE the TPM just made over info
// with pub, so that a response damaged on its way from the TPM fails here
// rather than in a verifier.
func checkTPMSignature(pub crypto.PublicKey, info, sigRaw []byte) error {
	buf := bytes.NewBuffer(sigRaw)
	sig, err := tpm2.DecodeSignature(buf)
	if err != nil {
		return fmt.Errorf("parse the TPM's signature: %w", err)
	}
	if buf.Len() != 0 {
		return fmt.Errorf("parse the TPM's signature: %d trailing bytes", buf.Len())
	}
	if err := checkSignature(pub, info, sig); err != nil {
		return fmt.Errorf("the TPM's signature does not verify: %w", err)
	}
	return nil
}
