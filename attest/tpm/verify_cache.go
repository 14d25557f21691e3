package tpm

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"hash"
	"sync/atomic"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/internal/lru"
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
	publics   *lru.Cache[[32]byte, *publicArea]
	certified *lru.Cache[[32]byte, *tpm2.AttestationData]
	akCerts   *lru.Cache[certKey, *verifiedCert]
	logs      *lru.Cache[[32]byte, []byte]
	// For tests: answers from the cache (any kind), and firmware log
	// replays answered.
	hits, logHits atomic.Int64
}

// NewCache returns a cache of at most size entries of each kind; size 0 or
// less caches nothing.
func NewCache(size int) *Cache {
	return &Cache{
		publics:   lru.New[[32]byte, *publicArea](size),
		certified: lru.New[[32]byte, *tpm2.AttestationData](size),
		akCerts:   lru.New[certKey, *verifiedCert](size),
		logs:      lru.New[[32]byte, []byte](size),
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
	h := keyHash{sha256.New()}
	h.bytes([]byte("attestd tpm certification v1"))
	h.bytes(p.akRaw)
	h.bytes(info)
	h.bytes(sig)
	key := h.sum()
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
	windows []window
}

type window struct{ notBefore, notAfter time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.notBefore) && !t.After(w.notAfter) }

// akCert parses an AK certificate and checks that it chains to roots at
// now. A certificate that chained is remembered; at a later time it is
// accepted from the cache only when every certificate of one of its chains
// is valid then, and otherwise checked again in full.
func (c *Cache) akCert(der []byte, roots *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	key := certKey{der: sha256.Sum256(der), roots: roots}
	if e, ok := c.akCerts.Get(key); ok {
		for _, w := range e.windows {
			if w.contains(now) {
				c.hits.Add(1)
				return e.cert, nil
			}
		}
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", PartAKCert, err)
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return nil, fmt.Errorf("%s does not chain to the AK roots: %w", PartAKCert, err)
	}
	e := &verifiedCert{cert: cert}
	for _, chain := range chains {
		w := window{notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
		for _, c := range chain[1:] {
			if c.NotBefore.After(w.notBefore) {
				w.notBefore = c.NotBefore
			}
			if c.NotAfter.Before(w.notAfter) {
				w.notAfter = c.NotAfter
			}
		}
		e.windows = append(e.windows, w)
	}
	c.akCerts.Add(key, e)
	return cert, nil
}

// keyHash writes length-prefixed fields, so that no two sequences of
// fields hash the same bytes.
type keyHash struct{ hash.Hash }

func (h keyHash) uint(n uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	h.Write(b[:])
}

func (h keyHash) bytes(b []byte) {
	h.uint(uint64(len(b)))
	h.Write(b)
}

func (h keyHash) sum() [32]byte {
	var out [32]byte
	h.Sum(out[:0])
	return out
}
