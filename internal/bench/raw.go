package bench

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"net"
	"slices"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/attestd/attestd/attest/tpm"
)

// rawTPM issues the TPM commands one attestation needs with go-tpm, on
// attestd's own transient keys in the same TPM: TPM2_Quote by its AK over
// the PCRs attestd quotes, and TPM2_Sign by its environment key. It talks
// through the same proxy as attestd, which serialises the two.
type rawTPM struct {
	conn net.Conn
	ak   tpmutil.Handle
	env  tpmutil.Handle
	sel  tpm2.PCRSelection
	// AK is the attestation key's public key (the verifier pins it).
	AK crypto.PublicKey
}

// openRawTPM finds attestd's AK (a restricted signing key) and environment
// key (an unrestricted one) among the TPM's transient objects. Without a
// resource manager the handles are the TPM's own, visible to every
// connection.
func openRawTPM(socket string) (*rawTPM, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	r := &rawTPM{conn: conn, sel: tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: quotedPCRs()}}
	hs, err := client.Handles(conn, tpm2.HandleTypeTransient)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("list transient objects: %w", err)
	}
	for _, h := range hs {
		pub, _, _, err := tpm2.ReadPublic(conn, h)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("read public area of %#x: %w", uint32(h), err)
		}
		if pub.Attributes&tpm2.FlagSign == 0 {
			continue
		}
		if pub.Attributes&tpm2.FlagRestricted != 0 {
			r.ak = h
			if r.AK, err = pub.Key(); err != nil {
				conn.Close()
				return nil, err
			}
		} else {
			r.env = h
		}
	}
	if r.ak == 0 || r.env == 0 {
		conn.Close()
		return nil, fmt.Errorf("attestd's AK and environment key not found among transient handles %v", hs)
	}
	return r, nil
}

// quotedPCRs are the PCRs attestd quotes by default: the boot PCRs and its
// own register.
func quotedPCRs() []int {
	pcrs := append(tpm.DefaultBootPCRs(), tpm.DefaultPCR)
	slices.Sort(pcrs)
	return slices.Compact(pcrs)
}

// attest is the raw work of one attestation: a quote with fresh qualifying
// data and a signature over a fresh digest.
func (r *rawTPM) attest() error {
	var nonce [32]byte
	rand.Read(nonce[:])
	if _, _, err := tpm2.QuoteRaw(r.conn, r.ak, "", "", nonce[:], r.sel, tpm2.AlgNull); err != nil {
		return fmt.Errorf("TPM2_Quote: %w", err)
	}
	digest := sha256.Sum256(nonce[:])
	if _, err := tpm2.Sign(r.conn, r.env, "", digest[:], nil, nil); err != nil {
		return fmt.Errorf("TPM2_Sign: %w", err)
	}
	return nil
}

func (r *rawTPM) Close() error { return r.conn.Close() }
