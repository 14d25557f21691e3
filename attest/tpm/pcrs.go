package tpm

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"slices"

	"github.com/google/go-tpm/legacy/tpm2"
)

// The quoted PCRs' values, without reading them back.
//
// The tpm/pcrs part carries the values of the quoted PCRs, and they must be
// the values the quote covers: SHA-256 over them, in index order, is the
// quote's PCR digest (TPMS_QUOTE_INFO.pcrDigest). Reading them back after
// every quote (two TPM2_PCR_Read for 13 PCRs) tripled the TPM commands of
// an attestation. Instead the backend keeps the values (b.pcrs): it reads
// them once, and advances the agent PCR's value itself on every Extend it
// makes (new = SHA-256(old ‖ digest)), since it knows what it extended.
// After each quote it hashes the kept values and compares the result with
// the quote's PCR digest:
//
//   - equal: the kept values are exactly the quoted ones (a different set
//     of values with the same digest would be a SHA-256 collision), and the
//     quote is all the TPM did;
//   - different, or some values never read: the PCRs are read back. This
//     happens on the first quote after start (the values not yet read;
//     the agent's Read of the agent PCR brings up to 7 others along), and
//     whenever something other than this backend extended a quoted PCR
//     since the last read: systemd-pcrphase extends PCR 11 during boot and
//     shutdown; other tools may extend PCRs through the kernel's resource
//     manager.
//     The values read back must match this quote's digest; if they do not
//     either (a PCR moved between the quote and the read), the quote is
//     made again, at most quoteAttempts times in all, and then Evidence
//     fails with errPCRsMoved, which does not fail the TPM.
//
// So the evidence is as before, and only the number of commands changed: a
// steady state of one TPM2_Quote per Evidence.

// extended advances the kept value of the agent PCR after Extend put d (the
// SHA-256 digest) into it. b.mu must be held.
func (b *Backend) extended(d []byte) {
	v, ok := b.pcrs[b.cfg.PCR]
	if !ok {
		return
	}
	h := sha256.New()
	h.Write(v)
	h.Write(d)
	b.pcrs[b.cfg.PCR] = h.Sum(nil)
}

// maxPCRRead is how many PCR values one TPM2_PCR_Read returns at most
// (TPML_DIGEST holds 8).
const maxPCRRead = 8

// withUncached is pcr followed by up to maxPCRRead-1 quoted PCRs whose
// values are not kept yet: what one TPM2_PCR_Read can bring along.
func (b *Backend) withUncached(pcr int) []int {
	out := []int{pcr}
	for _, p := range b.cfg.quotedPCRs() {
		if len(out) == maxPCRRead {
			break
		}
		if _, ok := b.pcrs[p]; !ok && p != pcr {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// uncached lists the PCRs among pcrs whose values are not kept.
func (b *Backend) uncached(pcrs []int) []int {
	var out []int
	for _, p := range pcrs {
		if _, ok := b.pcrs[p]; !ok {
			out = append(out, p)
		}
	}
	return out
}

// matches reports whether the kept values of pcrs (ascending) are all
// there and hash to digest, the PCR digest of a SHA-256 quote of pcrs.
func (b *Backend) matches(pcrs []int, digest []byte) bool {
	h := sha256.New()
	for _, p := range pcrs {
		v, ok := b.pcrs[p]
		if !ok {
			return false
		}
		h.Write(v)
	}
	return bytes.Equal(h.Sum(nil), digest)
}

// readPCRs reads the SHA-256 values of pcrs (ascending) from the TPM into
// b.pcrs, at most maxPCRRead per TPM2_PCR_Read. A TPM may return fewer
// values than asked for; the rest are asked for again. b.mu must be held.
func (b *Backend) readPCRs(pcrs []int) error {
	for len(pcrs) > 0 {
		sel := tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: pcrs[:min(len(pcrs), maxPCRRead)]}
		vals, err := tpm2.ReadPCRs(b.rw, sel)
		if err != nil {
			return fmt.Errorf("read PCRs %v: %w", sel.PCRs, err)
		}
		var rest []int
		for _, p := range sel.PCRs {
			v, ok := vals[p]
			if !ok {
				rest = append(rest, p)
				continue
			}
			if len(v) != sha256.Size {
				return fmt.Errorf("read PCR %d: %d bytes, want %d", p, len(v), sha256.Size)
			}
			b.pcrs[p] = v
		}
		if len(rest) == len(sel.PCRs) {
			return fmt.Errorf("read PCRs %v: the TPM returned none of them", sel.PCRs)
		}
		pcrs = append(rest, pcrs[len(sel.PCRs):]...)
	}
	return nil
}

// quotedValues returns the kept values of pcrs.
func (b *Backend) quotedValues(pcrs []int) map[uint32][]byte {
	out := make(map[uint32][]byte, len(pcrs))
	for _, p := range pcrs {
		out[uint32(p)] = bytes.Clone(b.pcrs[p])
	}
	return out
}
