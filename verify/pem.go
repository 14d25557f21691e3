package verify

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ParsePEMPrivateKey parses the first PEM block of b as an ECDSA P-256
// private key ("EC PRIVATE KEY" or PKCS #8 "PRIVATE KEY"), the key
// SignResult and SignReference sign with.
func ParsePEMPrivateKey(b []byte) (*ecdsa.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block")
	}
	var k any
	var err error
	switch blk.Type {
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(blk.Bytes)
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want EC PRIVATE KEY or PRIVATE KEY", blk.Type)
	}
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("want an ECDSA P-256 key")
	}
	return ek, nil
}

// ParsePEMPublicKey parses the first PEM block of b as a PKIX "PUBLIC KEY".
func ParsePEMPublicKey(b []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New(`want a PEM "PUBLIC KEY" block`)
	}
	return x509.ParsePKIXPublicKey(blk.Bytes)
}
