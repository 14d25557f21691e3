package snp

import (
	"crypto/x509"
	"slices"
	"sync/atomic"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sevverify "github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"
	"google.golang.org/protobuf/proto"

	"github.com/attestd/attestd/attest/internal/vcache"
)

// DefaultCacheSize bounds the shared cache a Verifier uses when its Cache
// is nil: the number of distinct VCEK/VLEK chains remembered.
const DefaultCacheSize = 64

// sharedCache is the cache of every Verifier whose Cache is nil. Sharing it
// is sound because an entry's key holds everything its verdict depends on
// except the time (see verifyReport).
var sharedCache = NewCache(DefaultCacheSize)

// Cache remembers certificate chains that verified, so that the reports of
// one machine (a bundle's, or a fleet's over a day) check the RSA-4096
// ARK → ASK → VCEK chain once, not once per report. Each report's own
// signature and every other check still run on every report. Safe for
// concurrent use.
type Cache struct {
	chains *vcache.Cache[[32]byte, *verifiedChain]
	hits   atomic.Int64 // answers from the cache, for tests
	misses atomic.Int64 // full checks, for tests
}

// NewCache returns a cache of at most size chains; size 0 or less caches
// nothing (every report verifies its chain).
func NewCache(size int) *Cache {
	return &Cache{chains: vcache.New[[32]byte, *verifiedChain](size)}
}

// verifiedChain is an endorsement key certificate (VCEK or VLEK) that
// go-sev-guest verified against the trusted roots, and the times at which
// every certificate of the chain (the key's, and the ARK and ASK/ASVK of
// each root it may have chained to) is valid.
type verifiedChain struct {
	cert                *x509.Certificate
	notBefore, notAfter time.Time
}

func (c *verifiedChain) validAt(t time.Time) bool {
	return !t.Before(c.notBefore) && !t.After(c.notAfter)
}

func (v Verifier) cache() *Cache {
	if v.Cache != nil {
		return v.Cache
	}
	return sharedCache
}

// verifyReport is go-sev-guest's SnpAttestation without certificate
// fetching, with the chain verification remembered. The first report of a
// chain runs the whole library check; when it passes, the endorsement key
// certificate is kept under a key over everything the chain check depends
// on besides the time: the certificate's exact bytes, the signing key kind,
// the report's CPUID (its product line), the verifier's expected product
// and the trusted roots' exact bytes. A later report with the same key,
// checked at a time when every certificate of the chain is still valid,
// skips only the chain's signatures: its own signature is verified with the
// remembered certificate, as the library does after the chain. At any other
// time it takes the library's full check again.
func (v Verifier) verifyReport(att *spb.Attestation, signer abi.ReportSigner, now time.Time) error {
	c := v.cache()
	var key [32]byte
	if c.chains.Enabled() {
		key = v.chainKey(att, signer)
		if e, ok := c.chains.Get(key); ok && e.validAt(now) {
			c.hits.Add(1)
			return sevverify.SnpProtoReportSignature(att.GetReport(), e.cert)
		}
	}
	c.misses.Add(1)
	if err := sevverify.SnpAttestation(att, &sevverify.Options{
		DisableCertFetching: true,
		Now:                 now,
		TrustedRoots:        v.Roots,
		Product:             v.Product,
	}); err != nil {
		return err
	}
	if c.chains.Enabled() {
		if e := v.chainOf(att, signer); e != nil {
			c.chains.Add(key, e)
		}
	}
	return nil
}

// endorsementKey is the DER certificate of the key that signed the report.
func endorsementKey(att *spb.Attestation, signer abi.ReportSigner) []byte {
	if signer == abi.VlekReportSigner {
		return att.GetCertificateChain().GetVlekCert()
	}
	return att.GetCertificateChain().GetVcekCert()
}

// roots are the trusted roots go-sev-guest uses: the configured ones, or
// its embedded AMD roots.
func (v Verifier) roots() map[string][]*trust.AMDRootCerts {
	if len(v.Roots) > 0 {
		return v.Roots
	}
	out := map[string][]*trust.AMDRootCerts{}
	for line, r := range trust.DefaultRootCerts {
		out[line] = []*trust.AMDRootCerts{r}
	}
	return out
}

// chainKey names a chain verification: SHA-256 over every input of
// go-sev-guest's chain check but the time, each length-prefixed.
func (v Verifier) chainKey(att *spb.Attestation, signer abi.ReportSigner) [32]byte {
	h := vcache.NewKey("attestd snp chain v1")
	h.Uint(uint64(signer))
	h.Uint(uint64(att.GetReport().GetCpuid1EaxFms()))
	product, _ := proto.MarshalOptions{Deterministic: true}.Marshal(v.Product)
	h.Bytes(product)
	h.Bytes(endorsementKey(att, signer))
	h.Uint(uint64(len(v.Roots))) // 0: go-sev-guest's embedded roots
	roots := v.roots()
	lines := make([]string, 0, len(roots))
	for line := range roots {
		lines = append(lines, line)
	}
	slices.Sort(lines)
	for _, line := range lines {
		h.Str(line)
		h.Uint(uint64(len(roots[line])))
		for _, r := range roots[line] {
			if r == nil {
				h.Str("nil")
				continue
			}
			h.Str(r.ProductLine)
			h.Str(r.Product)
			pc := r.ProductCerts
			if pc == nil {
				pc = &trust.ProductCerts{}
			}
			for _, c := range []*x509.Certificate{pc.Ark, pc.Ask, pc.Asvk} {
				if c == nil {
					h.Str("none")
					continue
				}
				h.Bytes(c.Raw)
			}
		}
	}
	return h.Sum()
}

// chainOf is the verified chain of a report that passed go-sev-guest's
// check: the endorsement key certificate, and the validity common to it
// and to every root of its product line (the library accepts the first
// root that verifies; requiring all of them to be valid can only make the
// cache answer less often, never differently). nil when not determinable.
func (v Verifier) chainOf(att *spb.Attestation, signer abi.ReportSigner) *verifiedChain {
	cert, err := trust.ParseCert(endorsementKey(att, signer))
	if err != nil {
		return nil
	}
	line := ""
	if fms := att.GetReport().GetCpuid1EaxFms(); fms != 0 {
		line = kds.ProductLineFromFms(fms)
	} else {
		exts, err := kds.CertificateExtensions(cert, signer)
		if err != nil {
			return nil
		}
		product, err := kds.ParseProductName(exts.ProductName, signer)
		if err != nil {
			return nil
		}
		line = kds.ProductLine(product)
	}
	e := &verifiedChain{cert: cert, notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	roots := v.roots()[line]
	if len(roots) == 0 {
		return nil
	}
	for _, r := range roots {
		if r == nil || r.ProductCerts == nil {
			continue
		}
		ica := r.ProductCerts.Ask
		if signer == abi.VlekReportSigner {
			ica = r.ProductCerts.Asvk
		}
		for _, c := range []*x509.Certificate{r.ProductCerts.Ark, ica} {
			if c == nil {
				continue
			}
			if c.NotBefore.After(e.notBefore) {
				e.notBefore = c.NotBefore
			}
			if c.NotAfter.Before(e.notAfter) {
				e.notAfter = c.NotAfter
			}
		}
	}
	return e
}
