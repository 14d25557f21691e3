package bench

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// attestVsRaw times fresh attestations over gRPC (Attest with a new nonce)
// and the raw TPM work each needs (TPM2_Quote + TPM2_Sign on attestd's own
// keys), interleaved round by round in one environment whose runtime
// directory is under dir.
func (h *harness) attestVsRaw(ctx context.Context, name, dir string) AttestResult {
	r := AttestResult{FS: name, Dir: dir, FSType: fsType(dir)}
	e, err := h.startTPMEnv(ctx, dir)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer e.close()
	raw, err := openRawTPM(e.proxy.Socket())
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer raw.Close()

	attestOnce := func() (time.Duration, error) {
		t := time.Now()
		_, err := e.c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce()})
		return time.Since(t), err
	}
	rawOnce := func() (time.Duration, error) {
		t := time.Now()
		err := raw.attest()
		return time.Since(t), err
	}
	for range 3 { // warm up: connections, caches
		if _, err := attestOnce(); err != nil {
			r.Err = fmt.Sprintf("Attest: %v", err)
			return r
		}
		if _, err := rawOnce(); err != nil {
			r.Err = err.Error()
			return r
		}
	}
	var attests, raws []time.Duration
	var tpm tpmStats
	tpm.ByCode = map[uint32]int{}
	for range h.p.AttestRounds {
		before := e.proxy.Stats()
		for range h.p.AttestPerRound {
			d, err := attestOnce()
			if err != nil {
				r.Err = fmt.Sprintf("Attest: %v", err)
				return r
			}
			attests = append(attests, d)
		}
		delta := e.proxy.Stats().sub(before)
		tpm.Busy += delta.Busy
		tpm.Commands += delta.Commands
		for c, n := range delta.ByCode {
			tpm.ByCode[c] += n
		}
		for range h.p.AttestPerRound {
			d, err := rawOnce()
			if err != nil {
				r.Err = err.Error()
				return r
			}
			raws = append(raws, d)
		}
	}
	r.N = len(attests)
	r.Attest, r.Raw = distOf(attests), distOf(raws)
	r.TPMPerAttest = tpm.Busy / time.Duration(r.N)
	r.Commands = perCall(tpm.ByCode, r.N)
	h.logf("attest on %s: gRPC p50 %v, raw p50 %v, ratio %.2f", name, r.Attest.P50, r.Raw.P50, r.Ratio())
	return r
}

// perCall lists the TPM commands per call, e.g. "Quote 1, PCR_Read 2".
func perCall(byCode map[uint32]int, calls int) string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(byCode)) {
		per := float64(byCode[c]) / float64(calls)
		parts = append(parts, fmt.Sprintf("%s %s", commandName(c), trimFloat(per)))
	}
	return strings.Join(parts, ", ")
}

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}

// fsType names the file system dir is on.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs %#x", st.Type)
}
