// Package tdxtest is a fake TDX guest for tests. go-tdx-guest ships only
// one canned Intel-signed quote, so this package builds a fake Intel chain
// ("Intel SGX Root CA" → "Intel SGX PCK Platform CA" → "Intel SGX PCK
// Certificate" carrying the SGX extensions copied from the canned quote's
// PCK certificate), binds a fresh attestation key into the QE report and
// signs quotes with any REPORTDATA and the fake's own RTMRs. go-tdx-guest's
// verifier accepts them with Roots() and rejects them with Intel's root.
//
// Test-only: it imports go-tdx-guest/testing and must never be linked into
// the binaries (internal/archtest checks).
package tdxtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
	"google.golang.org/protobuf/proto"
)

// Device is a fake TDX guest: a quote provider and the four RTMRs. RTMR0-2
// start as in the canned quote, RTMR3 at zero (a fresh boot). Safe for
// concurrent use.
type Device struct {
	mu        sync.Mutex
	base      *pb.QuoteV4
	root      *x509.Certificate
	pckKey    *ecdsa.PrivateKey
	chain     []byte // PEM leaf ‖ intermediate ‖ root ‖ NUL
	attestKey *ecdsa.PrivateKey
	rtmrs     [4][48]byte
	// TDAttributes replaces the TD_ATTRIBUTES of quotes when set.
	TDAttributes []byte
}

// New makes a fake Intel chain valid from created for ten years.
func New(created time.Time) (*Device, error) {
	q, err := abi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		return nil, fmt.Errorf("parse canned quote: %w", err)
	}
	base, ok := q.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("canned quote is %T, want QuoteV4", q)
	}
	d := &Device{base: base}
	for i, r := range base.GetTdQuoteBody().GetRtmrs() {
		if i < 3 {
			copy(d.rtmrs[i][:], r)
		}
	}
	realPCK, err := pckFromQuote(base)
	if err != nil {
		return nil, err
	}
	if d.pckKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if err := d.makeChain(realPCK, created, created.AddDate(10, 0, 0)); err != nil {
		return nil, err
	}
	if d.attestKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	return d, nil
}

func pckFromQuote(q *pb.QuoteV4) (*x509.Certificate, error) {
	raw := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, errors.New("canned quote has no PCK certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// Reissue replaces the fake chain with a new root and intermediate (new
// keys, valid from created for ten years) and a new PCK certificate for the
// same PCK key, valid until pckNotAfter. Quotes made afterwards carry the
// new chain; Roots and RootPEM return the new root.
func (d *Device) Reissue(created, pckNotAfter time.Time) error {
	realPCK, err := pckFromQuote(d.base)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.makeChain(realPCK, created, pckNotAfter)
}

// makeChain makes a root and an intermediate and certifies d.pckKey.
func (d *Device) makeChain(realPCK *x509.Certificate, created, pckNotAfter time.Time) error {
	name := func(cn string) pkix.Name {
		return pkix.Name{CommonName: cn, Organization: []string{"Intel Corporation"}, Locality: []string{"Santa Clara"}, Province: []string{"CA"}, Country: []string{"US"}}
	}
	tmpl := func(serial int64, cn string, ca bool) *x509.Certificate {
		c := &x509.Certificate{
			SerialNumber:          big.NewInt(serial),
			Subject:               name(cn),
			NotBefore:             created,
			NotAfter:              created.AddDate(10, 0, 0),
			BasicConstraintsValid: true,
			IsCA:                  ca,
			KeyUsage:              x509.KeyUsageDigitalSignature,
			SignatureAlgorithm:    x509.ECDSAWithSHA256,
		}
		if ca {
			c.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		}
		return c
	}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	intKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	rootT := tmpl(1, "Intel SGX Root CA", true)
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, rootKey.Public(), rootKey)
	if err != nil {
		return fmt.Errorf("fake root: %w", err)
	}
	if d.root, err = x509.ParseCertificate(rootDER); err != nil {
		return err
	}
	intDER, err := x509.CreateCertificate(rand.Reader, tmpl(2, "Intel SGX PCK Platform CA", true), d.root, intKey.Public(), rootKey)
	if err != nil {
		return fmt.Errorf("fake intermediate: %w", err)
	}
	inter, err := x509.ParseCertificate(intDER)
	if err != nil {
		return err
	}
	leafT := tmpl(3, "Intel SGX PCK Certificate", false)
	leafT.NotAfter = pckNotAfter
	// The verifier counts the leaf's extensions: carry the real PCK's
	// extensions (SGX extension with FMSPC etc. and the standard ones) and
	// let x509 add none of its own.
	leafT.BasicConstraintsValid = false
	leafT.KeyUsage = 0
	leafT.ExtraExtensions = realPCK.Extensions
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, inter, d.pckKey.Public(), intKey)
	if err != nil {
		return fmt.Errorf("fake PCK: %w", err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return err
	}
	if _, err := pcs.PckCertificateExtensions(leaf); err != nil {
		return fmt.Errorf("fake PCK extensions: %w", err)
	}
	var buf bytes.Buffer
	for _, der := range [][]byte{leafDER, intDER, rootDER} {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	buf.WriteByte(0)
	d.chain = buf.Bytes()
	return nil
}

// Roots is a pool holding the fake "Intel SGX Root CA".
func (d *Device) Roots() *x509.CertPool {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := x509.NewCertPool()
	p.AddCert(d.root)
	return p
}

// RootPEM is the fake "Intel SGX Root CA" certificate, PEM-encoded.
func (d *Device) RootPEM() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.root.Raw})
}

// IsSupported implements go-tdx-guest's client.QuoteProvider.
func (*Device) IsSupported() error { return nil }

// GetRawQuote returns a quote signed by the fake chain with reportData and
// the device's RTMRs.
func (d *Device) GetRawQuote(reportData [64]byte) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q := proto.Clone(d.base).(*pb.QuoteV4)
	q.ExtraBytes = nil // the canned quote carries a test marker there
	body := q.TdQuoteBody
	body.ReportData = bytes.Clone(reportData[:])
	body.Rtmrs = nil
	for _, r := range d.rtmrs {
		body.Rtmrs = append(body.Rtmrs, bytes.Clone(r[:]))
	}
	if d.TDAttributes != nil {
		body.TdAttributes = bytes.Clone(d.TDAttributes)
	}
	hdr, err := abi.HeaderToAbiBytes(q.Header)
	if err != nil {
		return nil, err
	}
	bodyRaw, err := abi.TdQuoteBodyToAbiBytes(body)
	if err != nil {
		return nil, err
	}
	sd := q.SignedData
	if sd.Signature, err = sign(d.attestKey, append(hdr, bodyRaw...)); err != nil {
		return nil, err
	}
	ak := make([]byte, 64)
	d.attestKey.PublicKey.X.FillBytes(ak[:32])
	d.attestKey.PublicKey.Y.FillBytes(ak[32:])
	sd.EcdsaAttestationKey = ak

	cd := sd.CertificationData
	qrcd := cd.QeReportCertificationData
	h := sha256.Sum256(append(bytes.Clone(ak), qrcd.QeAuthData.Data...))
	rd := make([]byte, 64)
	copy(rd, h[:])
	qrcd.QeReport.ReportData = rd
	qeRaw, err := abi.EnclaveReportToAbiBytes(qrcd.QeReport)
	if err != nil {
		return nil, err
	}
	if qrcd.QeReportSignature, err = sign(d.pckKey, qeRaw); err != nil {
		return nil, err
	}
	chain := qrcd.PckCertificateChainData
	delta := uint32(len(d.chain)) - chain.Size
	chain.PckCertChain = bytes.Clone(d.chain)
	chain.Size = uint32(len(d.chain))
	cd.Size += delta
	q.SignedDataSize += delta
	return abi.QuoteToAbiBytes(q)
}

// sign is ECDSA P-256 over SHA-256(msg) as r ‖ s, 32 bytes each.
func sign(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

// ExtendRTMR extends RTMR index with a SHA-384 digest.
func (d *Device) ExtendRTMR(index int, digest []byte) error {
	if index < 0 || index > 3 || len(digest) != sha512.Size384 {
		return fmt.Errorf("fake TDX: extend RTMR%d with %d bytes: want index 0-3 and 48 bytes", index, len(digest))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rtmrs[index] = sha512.Sum384(append(bytes.Clone(d.rtmrs[index][:]), digest...))
	return nil
}

// ZeroRTMRs sets RTMR0-3 to zero, as at the start of a TD, for tests that
// extend them as firmware would from its event log.
func (d *Device) ZeroRTMRs() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rtmrs = [4][48]byte{}
}

// ReadRTMR returns RTMR index.
func (d *Device) ReadRTMR(index int) ([]byte, error) {
	if index < 0 || index > 3 {
		return nil, fmt.Errorf("fake TDX: no RTMR%d", index)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.rtmrs[index][:]), nil
}
