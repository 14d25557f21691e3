package tpm

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/internal/vcache"
)

// DefaultCacheSize bounds each kind of entry in the shared cache a Verifier
// uses when its Cache is nil.
const DefaultCacheSize = 64

// maxCachedLog bounds the firmware logs a Cache keeps (real ones are tens
// of KiB), and so its memory: DefaultCacheSize of them is 16 MiB at most.
const maxCachedLog = 256 << 10

// sharedCache is the cache of every Verifier whose Cache is nil. Sharing it
// is sound because an entry's key holds everything its result depends on
// except the time, which is checked on every use.
var sharedCache = NewCache(DefaultCacheSize)

// Cache remembers the work that is the same in every attestation of one
// TPM, each entry under the SHA-256 of every byte its result depends on:
//   - decoded public areas (AK, env key), by their exact bytes;
//   - the AK's certification of the env key that verified, by the AK's
//     public area, the TPMS_ATTEST and the signature;
//   - AK certificates that chained to the AK roots, by their exact bytes and
//     the root pool, with the validity of each chain found, checked against
//     the verification time on every use;
//   - firmware event logs that replayed, by the log and the PCR 0-7 values
//     (the log is kept and compared byte for byte: cheaper than hashing).
//
// The quote, its signature, its qualifying data and its PCR values are
// checked on every attestation. Only results that passed are kept: an
// attacker can at most evict entries. Safe for concurrent use.
type Cache struct {
	publics   *vcache.Cache[[32]byte, *publicArea]
	certified *vcache.Cache[[32]byte, *tpm2.AttestationData]
	akCerts   *vcache.Cache[certKey, *verifiedCert]
	logs      *vcache.Cache[[32]byte, []byte]
	// For tests: answers from the cache (any kind), and firmware log
	// replays answered.
	hits, logHits atomic.Int64
}

// NewCache returns a cache of at most size entries of each kind; size 0 or
// less caches nothing.
func NewCache(size int) *Cache {
	return &Cache{
		publics:   vcache.New[[32]byte, *publicArea](size),
		certified: vcache.New[[32]byte, *tpm2.AttestationData](size),
		akCerts:   vcache.New[certKey, *verifiedCert](size),
		logs:      vcache.New[[32]byte, []byte](size),
	}
}

func (v Verifier) cache() *Cache {
	if v.Cache != nil {
		return v.Cache
	}
	return sharedCache
}

// publicArea is a decoded, canonical TPMT_PUBLIC. Shared between callers:
// never modified.
type publicArea struct {
	pub tpm2.Public
	key crypto.PublicKey
}

// parsePublic is the package's parsePublic, remembered by the exact bytes.
func (c *Cache) parsePublic(raw []byte) (tpm2.Public, crypto.PublicKey, error) {
	key := sha256.Sum256(raw)
	if pa, ok := c.publics.Get(key); ok {
		c.hits.Add(1)
		return pa.pub, pa.key, nil
	}
	pub, k, err := parsePublic(raw)
	if err != nil {
		return tpm2.Public{}, nil, err
	}
	c.publics.Add(key, &publicArea{pub: pub, key: k})
	return pub, k, nil
}

// certification is signedAttest of the AK's certification of the env key,
// remembered: the same certification (TPMS_ATTEST and signature) by the
// same AK public area verifies the same way every time. The agent certifies
// its env key once and ships that certification in every attestation.
func (c *Cache) certification(ev *attest.Evidence, p *parsed) (*tpm2.AttestationData, error) {
	info, infoErr := ev.MustPart(PartCertifyInfo)
	sig, sigErr := ev.MustPart(PartCertifySignature)
	if p.akErr != nil || infoErr != nil || sigErr != nil {
		return signedAttest(ev, p, PartCertifyInfo, PartCertifySignature, tpm2.TagAttestCertify)
	}
	h := vcache.NewKey("attestd tpm certification v1")
	h.Bytes(p.akRaw)
	h.Bytes(info)
	h.Bytes(sig)
	key := h.Sum()
	if ad, ok := c.certified.Get(key); ok {
		c.hits.Add(1)
		return ad, nil
	}
	ad, err := signedAttest(ev, p, PartCertifyInfo, PartCertifySignature, tpm2.TagAttestCertify)
	if err != nil {
		return nil, err
	}
	c.certified.Add(key, ad)
	return ad, nil
}

// certKey names an AK certificate's chain check: the SHA-256 of its DER and
// the root pool, held by identity. Holding the pool in the key keeps its
// address from being reused by another pool; and a CertPool can only grow,
// which never invalidates a chain that verified against it.
type certKey struct {
	der   [32]byte
	roots *x509.CertPool
}

// verifiedCert is an AK certificate that chained to the roots, with the
// validity of each chain x509 found.
type verifiedCert struct {
	cert    *x509.Certificate
	windows []vcache.Window
}

// akCert parses an AK certificate and checks that it chains to roots at
// now. A certificate that chained is remembered; at a later time it is
// accepted from the cache only when every certificate of one of its chains
// is valid then, and otherwise checked again in full.
func (c *Cache) akCert(der []byte, roots *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	key := certKey{der: sha256.Sum256(der), roots: roots}
	if e, ok := c.akCerts.Get(key); ok && vcache.AnyContains(e.windows, now) {
		c.hits.Add(1)
		return e.cert, nil
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", PartAKCert, err)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%s does not chain to the AK roots: %w", PartAKCert, err)
	}
	e := &verifiedCert{cert: cert, windows: vcache.ChainWindows(chains)}
	c.akCerts.Add(key, e)
	return cert, nil
}
