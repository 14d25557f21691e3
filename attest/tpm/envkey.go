package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	tpm2new "github.com/google/go-tpm/tpm2"
	tpmtransport "github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpmutil"
)

// envKeyTemplate is a non-restricted ECDSA P-256/SHA-256 signing key that
// cannot leave this TPM: it signs arbitrary digests (DSSE envelopes).
func envKeyTemplate() tpm2.Public {
	return tpm2.Public{
		Type:    tpm2.AlgECC,
		NameAlg: tpm2.AlgSHA256,
		Attributes: tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent |
			tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth | tpm2.FlagNoDA,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
		},
	}
}

// createEnvKey creates the environment key under a transient SRK, so its
// private part comes from the TPM's RNG (a primary key would be
// re-derivable from the owner seed), and loads it; or, with a key file from
// this boot, loads that key again.
func (b *Backend) createEnvKey() error {
	srk, err := client.NewKey(b.rw, tpm2.HandleOwner, client.SRKTemplateECC())
	if err != nil {
		return fmt.Errorf("create storage root key: %w", err)
	}
	defer srk.Close()
	var reset uint32
	if b.cfg.KeyFile != "" {
		if reset, err = resetCount(b.rw); err != nil {
			return err
		}
		h, pub, err := b.loadKeyFile(srk, reset)
		if err == nil {
			b.KeyReused = true
			return b.useEnvKey(h, pub)
		}
		if !errors.Is(err, os.ErrNotExist) {
			b.KeyNotReused = fmt.Sprintf("environment key blob %s not used: %v", b.cfg.KeyFile, err)
		}
	}
	h, pub, priv, err := b.createLoaded(srk)
	if err != nil {
		return err
	}
	if b.cfg.KeyFile != "" {
		if err := b.saveKeyFile(reset, pub, priv); err != nil {
			tpm2.FlushContext(b.rw, h)
			return err
		}
	}
	return b.useEnvKey(h, pub)
}

// createLoaded creates the environment key under srk and loads it: one
// TPM2_CreateLoaded, or TPM2_Create and TPM2_Load on a TPM older than
// revision 1.38 that lacks it. The key is the same either way. pub is the
// TPMT_PUBLIC and priv the TPM2B_PRIVATE's contents, as the key file keeps
// them.
func (b *Backend) createLoaded(srk *client.Key) (h tpmutil.Handle, pub, priv []byte, err error) {
	tmpl, err := envKeyTemplate().Encode()
	if err != nil {
		return 0, nil, nil, err
	}
	srkPub, err := srk.PublicArea().Encode()
	if err != nil {
		return 0, nil, nil, err
	}
	rsp, err := tpm2new.CreateLoaded{
		ParentHandle: tpm2new.AuthHandle{
			Handle: tpm2new.TPMHandle(srk.Handle()),
			Name:   tpm2new.TPM2BName{Buffer: sha256Name(srkPub)},
			Auth:   tpm2new.PasswordAuth(nil),
		},
		InPublic: tpm2new.TPM2BTemplate{Buffer: tmpl},
	}.Execute(tpmtransport.FromReadWriter(b.rw))
	if err == nil {
		return tpmutil.Handle(rsp.ObjectHandle), rsp.OutPublic.Bytes(), rsp.OutPrivate.Buffer, nil
	}
	if !errors.Is(err, tpm2new.TPMRCCommandCode) {
		return 0, nil, nil, fmt.Errorf("create environment key: %w", err)
	}
	priv, pub, _, _, _, err = tpm2.CreateKey(b.rw, srk.Handle(), tpm2.PCRSelection{}, "", "", envKeyTemplate())
	if err != nil {
		return 0, nil, nil, fmt.Errorf("create environment key: %w", err)
	}
	if h, _, err = tpm2.Load(b.rw, srk.Handle(), "", pub, priv); err != nil {
		return 0, nil, nil, fmt.Errorf("load environment key: %w", err)
	}
	return h, pub, priv, nil
}

// sha256Name is the TPM name of a public area whose nameAlg is SHA-256.
func sha256Name(pubArea []byte) []byte {
	d := sha256.Sum256(pubArea)
	return append([]byte{0x00, byte(tpm2.AlgSHA256)}, d[:]...)
}

// useEnvKey takes the loaded environment key at h with public area pub.
// The public area is the one the TPM just created or loaded (TPM2_Load
// checks the blob's integrity against it), so it is not read back; the
// certification checks the TPM's name for h against it, and every
// signature is checked against its key.
func (b *Backend) useEnvKey(h tpmutil.Handle, pub []byte) error {
	p, err := tpm2.DecodePublic(pub)
	if err != nil {
		tpm2.FlushContext(b.rw, h)
		return fmt.Errorf("environment key public area: %w", err)
	}
	key, err := p.Key()
	if err != nil {
		tpm2.FlushContext(b.rw, h)
		return fmt.Errorf("environment key public area: %w", err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok {
		tpm2.FlushContext(b.rw, h)
		return fmt.Errorf("environment key is %T, want ECDSA", key)
	}
	b.envHandle, b.envPublic, b.envArea = h, pub, p
	b.signer = &lockedSigner{b: b, pub: ec}
	return nil
}

// certifyEnvKey has the AK certify the environment key, and checks the
// TPM's answer: the AK's signature, and that the certified name is the
// environment key's.
func (b *Backend) certifyEnvKey() error {
	info, sig, err := tpm2.CertifyEx(b.rw, "", "", b.envHandle, b.ak.Handle(), nil,
		tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256})
	if err != nil {
		return fmt.Errorf("certify environment key with the AK: %w", err)
	}
	if err := checkTPMSignature(b.ak.PublicKey(), info, sig); err != nil {
		return fmt.Errorf("certify environment key with the AK: %w", err)
	}
	ad, err := tpm2.DecodeAttestationData(info)
	if err != nil || ad.AttestedCertifyInfo == nil {
		return fmt.Errorf("certify environment key with the AK: decode: %v", err)
	}
	if ok, err := ad.AttestedCertifyInfo.Name.MatchesPublic(b.envArea); err != nil || !ok {
		return errors.New("certify environment key with the AK: the TPM certified another key")
	}
	b.certifyInfo, b.certifySig = info, sig
	return nil
}

// lockedSigner signs with the environment key, serialised with every
// other use of the TPM, and checks each signature before it is used: a
// signature that does not verify fails the backend.
type lockedSigner struct {
	b   *Backend
	pub *ecdsa.PublicKey
}

func (l *lockedSigner) Public() crypto.PublicKey { return l.pub }

// ChecksSignatures tells scai.SignPayload that every signature returned has
// been verified against Public already (scai.CheckedSigner).
func (l *lockedSigner) ChecksSignatures() {}

// Sign signs a SHA-256 digest (opts nil or SHA-256) and returns an ASN.1
// ECDSA signature.
func (l *lockedSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) (_ []byte, err error) {
	if opts != nil && opts.HashFunc() != crypto.SHA256 {
		return nil, fmt.Errorf("sign with the environment key: hash %v, want SHA-256", opts.HashFunc())
	}
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("sign with the environment key: digest of %d bytes, want %d", len(digest), sha256.Size)
	}
	b := l.b
	defer b.catch(&err)
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.usable(); err != nil {
		return nil, err
	}
	s, err := tpm2.Sign(b.rw, b.envHandle, "", digest, nil, nil)
	if err != nil {
		return nil, b.failed(fmt.Errorf("sign with the environment key: %w", err))
	}
	if s.ECC == nil || s.ECC.R == nil || s.ECC.S == nil {
		return nil, b.failed(errors.New("sign with the environment key: the TPM's answer is not an ECDSA signature"))
	}
	sig, err := asn1.Marshal(struct{ R, S *big.Int }{s.ECC.R, s.ECC.S})
	if err != nil {
		return nil, b.failed(fmt.Errorf("sign with the environment key: %w", err))
	}
	if !ecdsa.VerifyASN1(l.pub, digest, sig) {
		return nil, b.failed(errors.New("sign with the environment key: the TPM's signature does not verify"))
	}
	return sig, nil
}
