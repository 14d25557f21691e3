package tdx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	tdxverify "github.com/google/go-tdx-guest/verify"

	"github.com/attestd/attestd/attest/internal/vcache"
)

// DefaultCacheSize bounds the shared cache a Verifier uses when its Cache
// is nil: the number of distinct PCK chains (and, apart, CCEL replays)
// remembered.
const DefaultCacheSize = 64

// sharedCache is the cache of every Verifier whose Cache is nil. Sharing it
// is sound because an entry's key holds everything its verdict depends on
// except the time (see verifyQuote).
var sharedCache = NewCache(DefaultCacheSize)

// Cache remembers PCK certificate chains that verified and CCELs that
// replayed, so that the quotes of one TD (a bundle's, or a fleet's over a
// day) check the same chain and firmware log once. Each quote's own
// signatures and every other check still run on every quote. Safe for
// concurrent use.
type Cache struct {
	chains *vcache.Cache[chainKey, *verifiedChain]
	ccels  *vcache.Cache[[32]byte, []byte]
	// For tests: chain checks answered and run in full, CCEL replays
	// answered.
	hits, misses, ccelHits atomic.Int64
}

// NewCache returns a cache of at most size chains and size CCEL replays;
// size 0 or less caches nothing.
func NewCache(size int) *Cache {
	return &Cache{chains: vcache.New[chainKey, *verifiedChain](size), ccels: vcache.New[[32]byte, []byte](size)}
}

func (v Verifier) cache() *Cache {
	if v.Cache != nil {
		return v.Cache
	}
	return sharedCache
}

// intelRootPEM is the Intel SGX Root CA, the certificate go-tdx-guest
// embeds as its default root (TestIntelRoot checks it is the root of the
// real quote go-tdx-guest ships). It is passed to go-tdx-guest explicitly
// so that the cache knows the root a chain ends in.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

var intelRoots = sync.OnceValue(func() *x509.CertPool {
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(intelRootPEM) {
		panic("tdx: embedded Intel SGX Root CA does not parse")
	}
	return p
})

// roots is the pool quotes chain to: the configured one, or Intel's root.
func (v Verifier) roots() *x509.CertPool {
	if v.Roots != nil {
		return v.Roots
	}
	return intelRoots()
}

// chainKey names a PCK chain verification: the SHA-256 of the quote's exact
// PCK chain bytes, and the root pool it was verified against. The pool is
// held by its identity; holding it in the key keeps its address from being
// reused by another pool, and a CertPool can only grow, which never
// invalidates a chain that verified against it.
type chainKey struct {
	chain [32]byte
	roots *x509.CertPool
}

// verifiedChain is a PCK chain go-tdx-guest verified: the PCK certificate
// (which signs the QE report), the validity of each chain x509 built from
// it to the roots, and the earliest NotAfter of the three certificates in
// the quote (go-tdx-guest checks those apart).
type verifiedChain struct {
	pck     *x509.Certificate
	windows []vcache.Window
	expires time.Time
}

// validAt reports whether go-tdx-guest's time checks of the chain pass at
// t: the quote's certificates have not expired, and every certificate of
// one chain x509 found is valid.
func (c *verifiedChain) validAt(t time.Time) bool {
	if t.After(c.expires) {
		return false
	}
	return vcache.AnyContains(c.windows, t)
}

func pckChainBytes(q *pb.QuoteV4) []byte {
	return q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
}

// verifyQuote is go-tdx-guest's TdxQuote without collateral, with the PCK
// chain's verification remembered. The first quote with a chain runs the
// whole library check; when it passes, the chain is kept under its exact
// bytes and the root pool. A later quote with the same chain, checked at a
// time when the chain is still valid, skips only the chain's signatures:
// the quote's own signature, the QE report's signature by the PCK key and
// the QE report's commitment to the attestation key are checked as the
// library checks them after the chain. At any other time it takes the
// library's full check again.
func (v Verifier) verifyQuote(q *pb.QuoteV4, now time.Time) error {
	c := v.cache()
	roots := v.roots()
	var key chainKey
	if c.chains.Enabled() {
		key = chainKey{chain: sha256.Sum256(pckChainBytes(q)), roots: roots}
		if e, ok := c.chains.Get(key); ok && e.validAt(now) {
			c.hits.Add(1)
			return quoteSignatures(q, e.pck)
		}
	}
	c.misses.Add(1)
	err := tdxverify.TdxQuote(q, &tdxverify.Options{
		TrustedRoots: roots,
		Now:          &tdxverify.TimeSet{PckCertChain: now, TcbInfo: now, QeIdentity: now, PckCrl: now, RootCaCrl: now},
	})
	if err != nil {
		return err
	}
	if c.chains.Enabled() {
		if e := chainOf(q, roots, now); e != nil {
			c.chains.Add(key, e)
		}
	}
	return nil
}

// chainOf is the verified chain of a quote that passed go-tdx-guest's
// check at now, nil when it cannot be determined.
func chainOf(q *pb.QuoteV4, roots *x509.CertPool, now time.Time) *verifiedChain {
	var certs []*x509.Certificate
	rest := pckChainBytes(q)
	for range 3 {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return nil
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil
		}
		certs = append(certs, c)
	}
	pck, inter := certs[0], certs[1]
	// The options go-tdx-guest verifies the PCK certificate with.
	intermediates := x509.NewCertPool()
	intermediates.AddCert(inter)
	chains, err := pck.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, CurrentTime: now})
	if err != nil {
		return nil
	}
	e := &verifiedChain{pck: pck, expires: certs[0].NotAfter}
	for _, c := range certs[1:] {
		if c.NotAfter.Before(e.expires) {
			e.expires = c.NotAfter
		}
	}
	e.windows = vcache.ChainWindows(chains)
	return e
}

// quoteSignatures is what go-tdx-guest checks of a quote after its PCK
// chain, without collateral (verifyEvidenceV4 and verifyQuote there): a TDX
// quote; the attestation key signed the header and TD quote body; the PCK
// key signed the QE report; the QE report data is SHA-256(attestation key ‖
// QE authentication data) followed by zeros.
func quoteSignatures(q *pb.QuoteV4, pck *x509.Certificate) error {
	if q.GetHeader().GetTeeType() != abi.TeeTDX {
		return abi.ErrTeeType
	}
	sd := q.GetSignedData()
	ak, err := attestationKey(sd.GetEcdsaAttestationKey())
	if err != nil {
		return fmt.Errorf("attestation key in the quote is invalid: %w", err)
	}
	sig, err := abi.SignatureToDER(sd.GetSignature())
	if err != nil {
		return fmt.Errorf("unable to convert QuoteV4's signature to DER format: %w", err)
	}
	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return fmt.Errorf("could not convert header to ABI bytes: %w", err)
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		return fmt.Errorf("could not convert TD Quote Body to ABI bytes: %w", err)
	}
	d := sha256.New()
	d.Write(header)
	d.Write(body)
	if !ecdsa.VerifyASN1(ak, d.Sum(nil), sig) {
		return tdxverify.ErrHashVerificationFail
	}
	qe := sd.GetCertificationData().GetQeReportCertificationData()
	qeReport, err := abi.EnclaveReportToAbiBytes(qe.GetQeReport())
	if err != nil {
		return fmt.Errorf("error verifying QE report signature: could not parse QE report: %w", err)
	}
	qeSig, err := abi.SignatureToDER(qe.GetQeReportSignature())
	if err != nil {
		return fmt.Errorf("error verifying QE report signature: unable to convert QE report's signature to DER format: %w", err)
	}
	if err := pck.CheckSignature(x509.ECDSAWithSHA256, qeReport, qeSig); err != nil {
		return fmt.Errorf("error verifying QE report signature: QE report's signature verification using PCK Leaf Certificate failed: %w", err)
	}
	d.Reset()
	d.Write(sd.GetEcdsaAttestationKey())
	d.Write(qe.GetQeAuthData().GetData())
	rd := qe.GetQeReport().GetReportData()
	want := d.Sum(nil)
	if len(rd) < len(want) || !bytes.Equal(rd[:len(want)], want) || !allZero(rd[len(want):]) {
		return fmt.Errorf("error verifying QE report data: %w", tdxverify.ErrSHA56VerificationFail)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// attestationKey decodes the quote's raw P-256 attestation key (X ‖ Y) as
// go-tdx-guest does.
func attestationKey(b []byte) (*ecdsa.PublicKey, error) {
	if len(b) != 64 {
		return nil, tdxverify.ErrPublicKeySize
	}
	k := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(b[:32]), Y: new(big.Int).SetBytes(b[32:])}
	if !k.Curve.IsOnCurve(k.X, k.Y) {
		return nil, errors.New("public key is not on curve \"P-256\"")
	}
	return k, nil
}

// maxCachedCCEL bounds the CCELs a Cache keeps (firmware publishes up to
// 256 KiB, mostly padding), and so its memory: DefaultCacheSize of them is
// 16 MiB at most.
const maxCachedCCEL = 256 << 10

// ccelKey names a CCEL replay: SHA-256 over the log's length and the
// RTMR0-2 values it was replayed against. The entry holds the log itself,
// compared byte for byte on each use: cheaper than hashing it.
func ccelKey(log []byte, rtmrs [][]byte) [32]byte {
	h := vcache.NewKey("attestd tdx ccel v1")
	h.Uint(uint64(len(log)))
	for _, r := range rtmrs {
		h.Bytes(r)
	}
	return h.Sum()
}
