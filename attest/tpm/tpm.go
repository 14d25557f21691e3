// Package tpm is the TPM 2.0 evidence backend: an attestation key (AK) in the
// owner hierarchy quotes the boot PCRs and the agent's PCR, and certifies a
// per-environment signing key created inside the TPM. Every evidence part is
// in its TCG wire encoding so standard tools (tpm2-tools) can check it.
//
// The package also holds the Verifier for evidence with Backend "tpm"; it
// needs no TPM.
package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	tpm2new "github.com/google/go-tpm/tpm2"
	tpmtransport "github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// Defaults.
const (
	// DefaultPCR is the register the agent extends its own events into.
	DefaultPCR = 13
	// DefaultFirmwareLogPath is where Linux exposes the firmware event log.
	DefaultFirmwareLogPath = "/sys/kernel/security/tpm0/binary_bios_measurements"
)

// DefaultBootPCRs are quoted besides the agent register: firmware (0-7), boot
// loader and kernel (8, 9), UKI and boot phases (11), command line (12).
func DefaultBootPCRs() []int { return []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12} }

// Config selects the TPM and the registers used.
type Config struct {
	// Device is "" (auto: /dev/tpmrm0, then /dev/tpm0), a device path,
	// "unix:/path" (a swtpm unix-io server socket) or "tcp:host:port".
	Device string
	// PCR is the agent register; 0 means DefaultPCR. The resettable PCRs 16
	// and 23 are refused.
	PCR int
	// BootPCRs are quoted besides PCR; nil means DefaultBootPCRs.
	BootPCRs []int
	// FirmwareLogPath is the firmware (TCG PC Client) event log; "" means
	// DefaultFirmwareLogPath. A missing file means the evidence carries no
	// firmware log.
	FirmwareLogPath string
	// KeyFile, when set, keeps the environment key's TPM-wrapped blob so a
	// restart within the same boot keeps the same key (the daemon puts it
	// in its runtime dir). The blob loads only in this TPM; after a reboot
	// it is ignored and replaced.
	KeyFile string
	// Timeout bounds each TPM command; 0 means DefaultTimeout. A command
	// without an answer in time fails the backend (attest.ErrDeviceFailed).
	Timeout time.Duration

	// autoDevices replaces defaultDevices in tests.
	autoDevices []string
	// managed: the device is the kernel's resource manager (/dev/tpmrm*),
	// which flushes a dead process's objects itself.
	managed bool
}

// validate fills in defaults and checks the register choices.
func (c Config) validate() (Config, error) {
	if c.PCR == 0 {
		c.PCR = DefaultPCR
	}
	if c.PCR < 0 || c.PCR >= client.NumPCRs {
		return c, fmt.Errorf("agent PCR %d out of range 1-%d", c.PCR, client.NumPCRs-1)
	}
	if c.PCR == 16 || c.PCR == 23 {
		return c, fmt.Errorf("agent PCR %d is resettable and cannot hold evidence; use e.g. %d", c.PCR, DefaultPCR)
	}
	if c.BootPCRs == nil {
		c.BootPCRs = DefaultBootPCRs()
	}
	for _, p := range c.BootPCRs {
		if p < 0 || p >= client.NumPCRs {
			return c, fmt.Errorf("boot PCR %d out of range 0-%d", p, client.NumPCRs-1)
		}
	}
	if c.FirmwareLogPath == "" {
		c.FirmwareLogPath = DefaultFirmwareLogPath
	}
	if c.autoDevices == nil {
		c.autoDevices = defaultDevices
	}
	return c, nil
}

// quotedPCRs is the sorted, de-duplicated union of BootPCRs and PCR.
func (c Config) quotedPCRs() []int {
	pcrs := append(slices.Clone(c.BootPCRs), c.PCR)
	slices.Sort(pcrs)
	return slices.Compact(pcrs)
}

// Backend is the TPM evidence backend. All methods, and the Signer, may be
// called from several goroutines: TPM access is serialised by one mutex.
//
// Every TPM command has a deadline (Config.Timeout). The first failed
// exchange with the TPM (no answer, an I/O error, an error response or one
// that does not check out) fails the backend: that call and every later one
// return an error wrapping attest.ErrDeviceFailed, and no evidence or
// signature is produced from then on.
type Backend struct {
	cfg   Config
	mu    sync.Mutex // guards rw and everything below
	tr    *transport // rw's deadlines and latched failure
	rw    io.ReadWriter
	ak    *client.Key
	banks []crypto.Hash

	envHandle   tpmutil.Handle // loaded when envPublic != nil
	envArea     tpm2.Public
	signer      crypto.Signer
	akPublic    []byte // TPMT_PUBLIC
	envPublic   []byte // TPMT_PUBLIC
	certifyInfo []byte // TPMS_ATTEST
	certifySig  []byte // TPMT_SIGNATURE
	akCert      []byte // DER or nil
	ekCert      []byte // DER or nil
	firmwareLog []byte // raw TCG PC Client log or nil
	closed      bool

	// pcrs is what the backend knows of the quoted PCRs' SHA-256 values
	// (see pcrs.go): read from the TPM, then advanced by each Extend.
	pcrs map[int][]byte

	// KeyReused reports that the env key was loaded from Config.KeyFile;
	// KeyNotReused, when set, says why an existing key file was not used.
	KeyReused    bool
	KeyNotReused string
	// Flushed counts the objects and sessions an earlier attestd left in a
	// TPM without resource manager, flushed at start.
	Flushed int
}

var _ attest.Backend = (*Backend)(nil)

// Open opens the TPM named by cfg.Device and calls New. When no TPM exists
// the error wraps attest.ErrNoDevice.
func Open(cfg Config) (*Backend, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	rw, managed, err := openDevice(cfg.Device, cfg.autoDevices)
	if err != nil {
		return nil, err
	}
	cfg.managed = managed
	return New(rw, cfg)
}

// New sets up the backend on an open TPM transport (a device, a swtpm
// socket, or the go-tpm-tools simulator): it creates the AK and the
// environment key and certifies the latter with the former. New takes
// ownership of rw; it is closed on error and by Close.
//
// Its TPM commands, in order: without a resource manager, the leftover
// check (TPM_PT_HR_ACTIVE, the transient handles; flushes and session
// lists only when something is there); the PCR banks; TPM2_CreatePrimary
// of the AK; TPM2_NV_ReadPublic of the ECC, then the RSA EK certificate
// index, and for the first that exists TPM_PT_NV_BUFFER_MAX and its
// TPM2_NV_Read blocks; TPM2_CreatePrimary of the SRK; with a key file
// TPM2_ReadClock, then TPM2_Load of the kept key or TPM2_CreateLoaded of a
// new one; TPM2_FlushContext of the SRK; TPM2_Certify. No PCR is read:
// the first Evidence (or Read) does it.
func New(rw io.ReadWriteCloser, cfg Config) (_ *Backend, err error) {
	defer func() {
		if err != nil {
			rw.Close()
		}
	}()
	cfg, err = cfg.validate()
	if err != nil {
		return nil, err
	}
	tr := newTransport(rw, cfg.Timeout)
	b := &Backend{cfg: cfg, tr: tr, rw: tr, pcrs: map[int][]byte{}}
	defer b.catch(&err)
	defer func() {
		if err != nil {
			b.flush()
		}
	}()
	if err := b.readFirmwareLog(); err != nil {
		return nil, err
	}
	if !cfg.managed {
		// No resource manager: objects a crashed attestd left loaded stay
		// in the TPM and fill its object slots.
		if err := b.flushLeftovers(); err != nil {
			return nil, err
		}
	}
	if err := b.loadBanks(); err != nil {
		return nil, err
	}
	// A primary key from a fixed template: the same AK on every boot of this
	// TPM, so verifiers can pin it. Transient, so nothing is written to NV.
	if b.ak, err = client.NewKey(b.rw, tpm2.HandleOwner, AKTemplate()); err != nil {
		return nil, fmt.Errorf("create attestation key: %w", err)
	}
	if b.akPublic, err = b.ak.PublicArea().Encode(); err != nil {
		return nil, fmt.Errorf("encode attestation key: %w", err)
	}
	b.readCerts()
	if err := b.createEnvKey(); err != nil {
		return nil, err
	}
	if err := b.certifyEnvKey(); err != nil {
		return nil, err
	}
	return b, nil
}

// AKTemplate is go-tpm-tools' ECC AK template with noDA: the AK has an
// empty authorization, so dictionary-attack protection guards nothing,
// and a TPM that counted unclean resets into lockout would refuse it.
func AKTemplate() tpm2.Public {
	t := client.AKTemplateECC()
	t.Attributes |= tpm2.FlagNoDA
	return t
}

// flushLeftovers flushes every transient object and loaded or saved
// session in the TPM. Only used without a resource manager, where attestd
// has the TPM to itself (the kernel gives /dev/tpm0 to one opener; swtpm
// serves one connection): what is loaded was left by an earlier attestd
// that died. The sessions are listed only when the TPM counts any active
// (TPM_PT_HR_ACTIVE: loaded and saved), which after a clean start it does
// not: two commands instead of three.
func (b *Backend) flushLeftovers() error {
	types := []tpm2.HandleType{tpm2.HandleTypeTransient}
	active, err := b.activeSessions()
	if err != nil {
		return err
	}
	if active > 0 {
		types = append(types, tpm2.HandleTypeLoadedSession, tpm2.HandleTypeSavedSession)
	}
	n := 0
	for _, ht := range types {
		hs, err := client.Handles(b.rw, ht)
		if err != nil {
			return fmt.Errorf("list TPM handles: %w", err)
		}
		for _, h := range hs {
			if err := tpm2.FlushContext(b.rw, h); err != nil {
				return fmt.Errorf("flush TPM handle 0x%08x left by an earlier attestd: %w", uint32(h), err)
			}
			n++
		}
	}
	b.Flushed = n
	return nil
}

// activeSessions is TPM_PT_HR_ACTIVE, the number of loaded and saved
// sessions. A TPM that does not report it counts as having some.
func (b *Backend) activeSessions() (uint32, error) {
	caps, _, err := tpm2.GetCapability(b.rw, tpm2.CapabilityTPMProperties, 1, uint32(tpm2.HRActive))
	if err != nil {
		return 0, fmt.Errorf("count TPM sessions: %w", err)
	}
	if len(caps) == 1 {
		if p, ok := caps[0].(tpm2.TaggedProperty); ok && p.Tag == tpm2.HRActive {
			return p.Value, nil
		}
	}
	return 1, nil
}

// failed latches err as a TPM failure unless the transport already failed
// (whose error it then returns), and returns an error wrapping
// attest.ErrDeviceFailed. Use it for any error of a TPM command.
func (b *Backend) failed(err error) error {
	if err == nil || errors.Is(err, attest.ErrDeviceFailed) || errors.Is(err, errClosed) {
		return err
	}
	if terr := b.tr.Err(); terr != nil {
		return terr
	}
	return b.tr.fail(err)
}

// catch turns a panic in go-tpm while it decodes a damaged TPM response
// (its legacy decoders do not check every length) into a failed TPM. Use
// it deferred, first, in every method that talks to the TPM.
func (b *Backend) catch(err *error) {
	if r := recover(); r != nil {
		*err = b.failed(fmt.Errorf("decode TPM response: %v", r))
	}
}

// usable reports why the TPM may not be used (closed, or failed earlier).
// b.mu must be held.
func (b *Backend) usable() error {
	if b.closed {
		return errClosed
	}
	return b.tr.Err()
}

// readCerts reads the EK certificate (ECC, then RSA) from its TCG NV index.
// It reads NV directly rather than creating the EK, which would persist a
// key at the reserved EK handle. Absence, or an unreadable index, only
// means the evidence carries no EK certificate. An AK made here has no
// certificate of its own.
func (b *Backend) readCerts() {
	b.akCert = b.ak.CertDERBytes()
	block := 0 // TPM_PT_NV_BUFFER_MAX, asked once a certificate is found
	for _, idx := range []uint32{client.EKCertNVIndexECC, client.EKCertNVIndexRSA} {
		der, err := b.readNV(tpm2new.TPMHandle(idx), &block)
		if err != nil {
			continue
		}
		// Some TPMs pad the index after the DER; keep the certificate only.
		var raw asn1.RawValue
		if rest, err := asn1.Unmarshal(der, &raw); err == nil {
			der = der[:len(der)-len(rest)]
		}
		if _, err := x509.ParseCertificate(der); err != nil {
			continue
		}
		b.ekCert = der
		return
	}
}

// maxEKCert bounds an EK certificate index read at start.
const maxEKCert = 16 << 10

// readNV reads a whole NV index with owner authorization: TPM2_NV_ReadPublic
// (which also tells whether it exists), then TPM2_NV_Read in blocks of
// *block bytes, asked of the TPM on first use.
func (b *Backend) readNV(idx tpm2new.TPMHandle, block *int) ([]byte, error) {
	t := tpmtransport.FromReadWriter(b.rw)
	rp, err := tpm2new.NVReadPublic{NVIndex: idx}.Execute(t)
	if err != nil {
		return nil, err
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	size := int(pub.DataSize)
	if size == 0 || size > maxEKCert {
		return nil, fmt.Errorf("NV index %#x holds %d bytes", uint32(idx), size)
	}
	if *block == 0 {
		caps, _, err := tpm2.GetCapability(b.rw, tpm2.CapabilityTPMProperties, 1, uint32(tpm2.NVMaxBufferSize))
		if err != nil {
			return nil, err
		}
		if len(caps) == 1 {
			if p, ok := caps[0].(tpm2.TaggedProperty); ok && p.Tag == tpm2.NVMaxBufferSize {
				*block = int(p.Value)
			}
		}
		if *block == 0 {
			return nil, errors.New("TPM does not report TPM_PT_NV_BUFFER_MAX")
		}
	}
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(*block, size-len(out))
		rsp, err := tpm2new.NVRead{
			AuthHandle: tpm2new.AuthHandle{Handle: tpm2new.TPMRHOwner, Auth: tpm2new.PasswordAuth(nil)},
			NVIndex:    tpm2new.NamedHandle{Handle: idx, Name: rp.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(out)),
		}.Execute(t)
		if err != nil {
			return nil, err
		}
		if len(rsp.Data.Buffer) != n {
			return nil, fmt.Errorf("NV index %#x: read %d bytes, want %d", uint32(idx), len(rsp.Data.Buffer), n)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}

func (b *Backend) readFirmwareLog() error {
	data, err := os.ReadFile(b.cfg.FirmwareLogPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("read firmware event log: %w", err)
	case len(data) > 0:
		b.firmwareLog = data
	}
	return nil
}

func (b *Backend) loadBanks() error {
	sels, err := client.AllocatedPCRs(b.rw)
	if err != nil {
		return fmt.Errorf("list PCR banks: %w", err)
	}
	for _, alg := range []tpm2.Algorithm{tpm2.AlgSHA1, tpm2.AlgSHA256, tpm2.AlgSHA384, tpm2.AlgSHA512} {
		for _, s := range sels {
			if s.Hash == alg && slices.Contains(s.PCRs, b.cfg.PCR) {
				h, err := alg.Hash()
				if err != nil {
					return err
				}
				b.banks = append(b.banks, h)
			}
		}
	}
	if !slices.Contains(b.banks, crypto.SHA256) {
		return fmt.Errorf("TPM has no SHA-256 PCR bank with PCR %d allocated (banks: %v)", b.cfg.PCR, b.banks)
	}
	return nil
}

// AKPublic is the attestation key's public key, for verifiers that pin it
// (attest.VerifyOptions.TrustedAKs). The AK is a primary key from a fixed
// template, so it is the same for every boot of this TPM.
func (b *Backend) AKPublic() crypto.PublicKey { return b.ak.PublicKey() }

// Name implements attest.Backend.
func (b *Backend) Name() string { return "tpm" }

// Register implements attest.Backend.
func (b *Backend) Register() measure.Register {
	return measure.Register{Kind: measure.PCR, Index: b.cfg.PCR}
}

// Banks implements attest.Backend: the allocated banks among SHA-1, SHA-256,
// SHA-384 and SHA-512, in that order.
func (b *Backend) Banks() []crypto.Hash { return slices.Clone(b.banks) }

// Signer implements attest.Backend. The key is TPM-resident and signs
// SHA-256 digests (ASN.1 ECDSA signatures).
func (b *Backend) Signer() crypto.Signer { return b.signer }

// Extend implements attest.Backend: one TPM2_PCR_Extend per bank. digests
// must hold exactly one digest of the right size for every bank.
func (b *Backend) Extend(ctx context.Context, digests map[crypto.Hash][]byte) (err error) {
	defer b.catch(&err)
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(digests) != len(b.banks) {
		return fmt.Errorf("extend PCR %d: got digests for %d banks, want %v", b.cfg.PCR, len(digests), b.banks)
	}
	for _, h := range b.banks {
		d, ok := digests[h]
		if !ok || len(d) != h.Size() {
			return fmt.Errorf("extend PCR %d: need a %d-byte %v digest", b.cfg.PCR, h.Size(), h)
		}
	}
	cmd := tpm2new.PCRExtend{
		PCRHandle: tpm2new.AuthHandle{Handle: tpm2new.TPMHandle(b.cfg.PCR), Auth: tpm2new.PasswordAuth(nil)},
	}
	for _, h := range b.banks {
		alg, err := tpm2.HashToAlgorithm(h)
		if err != nil {
			return err
		}
		cmd.Digests.Digests = append(cmd.Digests.Digests, tpm2new.TPMTHA{HashAlg: tpm2new.TPMIAlgHash(alg), Digest: digests[h]})
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return err
	}
	// One TPM2_PCR_Extend for every bank: the banks move together or not
	// at all, so a crash never leaves them disagreeing.
	if _, err := cmd.Execute(tpmtransport.FromReadWriter(b.rw)); err != nil {
		return b.failed(fmt.Errorf("extend PCR %d: %w", b.cfg.PCR, err))
	}
	b.extended(digests[crypto.SHA256])
	return nil
}

// Read implements attest.Backend: the agent PCR's value in bank. The
// SHA-256 read also fetches up to 7 other quoted PCRs in the same
// TPM2_PCR_Read (at no extra command), which the first Evidence then need
// not read back.
func (b *Backend) Read(ctx context.Context, bank crypto.Hash) (_ []byte, err error) {
	defer b.catch(&err)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !slices.Contains(b.banks, bank) {
		return nil, fmt.Errorf("read PCR %d: bank %v not allocated (have %v)", b.cfg.PCR, bank, b.banks)
	}
	alg, err := tpm2.HashToAlgorithm(bank)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return nil, err
	}
	if bank == crypto.SHA256 {
		if err := b.readPCRs(b.withUncached(b.cfg.PCR)); err != nil {
			return nil, b.failed(err)
		}
		return bytes.Clone(b.pcrs[b.cfg.PCR]), nil
	}
	v, err := tpm2.ReadPCR(b.rw, b.cfg.PCR, alg)
	if err != nil {
		return nil, b.failed(fmt.Errorf("read PCR %d (%v): %w", b.cfg.PCR, bank, err))
	}
	if len(v) != bank.Size() {
		return nil, b.failed(fmt.Errorf("read PCR %d (%v): %d bytes, want %d", b.cfg.PCR, bank, len(v), bank.Size()))
	}
	return v, nil
}

// Ping runs one cheap TPM command (TPM2_ReadClock) to show the TPM still
// answers; the daemon's watchdog calls it. A failure fails the backend.
// While another command runs Ping does not wait for it: that command ends
// within its deadline, and fails the backend if the TPM does not answer.
func (b *Backend) Ping(ctx context.Context) (err error) {
	defer b.catch(&err)
	if err := ctx.Err(); err != nil {
		return err
	}
	if !b.mu.TryLock() {
		return b.tr.Err()
	}
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return err
	}
	if _, err := resetCount(b.rw); err != nil {
		return b.failed(err)
	}
	return nil
}

var errClosed = errors.New("TPM backend closed")

// Close flushes the AK and environment key and closes the transport. It
// does not wait for a TPM command in progress (a hung TPM must not hold up
// shutdown): it then closes the transport, which ends that command, and
// leaves the keys to the resource manager or to the next start's flush.
func (b *Backend) Close() error {
	if !b.mu.TryLock() {
		return b.tr.Close()
	}
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	if b.tr.Err() == nil {
		b.flush()
	}
	return b.tr.Close()
}

func (b *Backend) flush() {
	if b.envPublic != nil {
		tpm2.FlushContext(b.rw, b.envHandle)
	}
	if b.ak != nil {
		b.ak.Close()
	}
}
