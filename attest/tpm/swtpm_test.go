package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/attest/attesttest"
	"github.com/attestd/attestd/internal/swtpmtest"
)

func openSWTPM(t testing.TB, sock string) *Backend {
	t.Helper()
	b, err := Open(Config{Device: "unix:" + sock, FirmwareLogPath: filepath.Join(t.TempDir(), "none")})
	if err != nil {
		t.Fatalf("Open(swtpm): %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func TestConformanceSWTPM(t *testing.T) {
	sock := swtpmtest.Start(t)
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend { return openSWTPM(t, sock) }, Verifier{},
		attesttest.Options{Trust: pinAK, Unauthenticated: []string{PartEKCert}})
}

// TestSWTPMEKCert checks the EK certificate swtpm_setup made is in the
// evidence and chains to swtpm's local CA.
func TestSWTPMEKCert(t *testing.T) {
	tpm := swtpmtest.StartTPM(t)
	b := openSWTPM(t, tpm.Socket)
	ev, err := b.Evidence(context.Background(), attest.Binding{})
	if err != nil {
		t.Fatal(err)
	}
	der, err := ev.MustPart(PartEKCert)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := ev.Part(PartEKCert); p.MediaType != MediaTypeCert {
		t.Errorf("EK cert media type %q", p.MediaType)
	}
	ek, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse EK certificate: %v", err)
	}
	issuer := readPEMCert(t, tpm.IssuerCert)
	if err := ek.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("EK certificate not signed by swtpm's local CA %s: %v", tpm.IssuerCert, err)
	}
	t.Logf("EK certificate: subject %q issuer %q", ek.Subject, ek.Issuer)
}

func readPEMCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTPM2ToolsCheckQuote proves the quote parts are the standard encodings:
// tpm2-tools' tpm2_checkquote verifies them with the AK, the qualifying
// data and the PCR values, and tpm2_print decodes the public areas.
func TestTPM2ToolsCheckQuote(t *testing.T) {
	for _, bin := range []string{"tpm2_checkquote", "tpm2_print"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed: run scripts/install-deps.sh", bin)
			}
			t.Skipf("%s not installed; run scripts/install-deps.sh", bin)
		}
	}
	sock := swtpmtest.Start(t)
	b := openSWTPM(t, sock)
	binding := attest.Bind(attest.PurposeAttest, [32]byte{1}, []byte("tpm2-tools"))
	ev, err := b.Evidence(context.Background(), binding)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	part := func(name string) []byte {
		d, err := ev.MustPart(name)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	akDER, err := x509.MarshalPKIXPublicKey(b.AKPublic())
	if err != nil {
		t.Fatal(err)
	}
	idx, vals, err := decodePCRs(part(PartPCRs))
	if err != nil {
		t.Fatal(err)
	}
	run(t, "tpm2_checkquote",
		"-u", file("ak.pem", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: akDER})),
		"-m", file("quote.attest", part(PartQuoteInfo)),
		"-s", file("quote.sig", part(PartQuoteSignature)),
		"-f", file("pcrs.bin", serializedPCRs(t, idx, vals)),
		"-g", "sha256",
		"-q", hex.EncodeToString(binding[:]))
	// And it really compares: a changed PCR value fails.
	vals[idx[0]] = bytes.Repeat([]byte{0xaa}, 32)
	if out, err := exec.Command("tpm2_checkquote",
		"-u", filepath.Join(dir, "ak.pem"), "-m", filepath.Join(dir, "quote.attest"),
		"-s", filepath.Join(dir, "quote.sig"), "-f", file("bad-pcrs.bin", serializedPCRs(t, idx, vals)),
		"-g", "sha256", "-q", hex.EncodeToString(binding[:])).CombinedOutput(); err == nil {
		t.Errorf("tpm2_checkquote accepted a changed PCR value:\n%s", out)
	}
	// The certify signature is over certify-info with the same AK.
	run(t, "tpm2_checkquote",
		"-u", filepath.Join(dir, "ak.pem"),
		"-m", file("certify.attest", part(PartCertifyInfo)),
		"-s", file("certify.sig", part(PartCertifySignature)),
		"-g", "sha256")
	out := run(t, "tpm2_print", "-t", "TPMS_ATTEST", filepath.Join(dir, "quote.attest"))
	if !strings.Contains(out, hex.EncodeToString(binding[:])) {
		t.Errorf("tpm2_print TPMS_ATTEST does not show the binding:\n%s", out)
	}
	out = run(t, "tpm2_print", "-t", "TPMT_PUBLIC", file("env.pub", part(PartEnvKeyPublic)))
	for _, want := range []string{"fixedtpm", "fixedparent", "sensitivedataorigin", "sign"} {
		if !strings.Contains(out, want) {
			t.Errorf("tpm2_print TPMT_PUBLIC lacks %q:\n%s", want, out)
		}
	}
	if bytes.Contains([]byte(out), []byte("restricted")) {
		t.Errorf("env key is restricted:\n%s", out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func BenchmarkEvidenceSWTPM(b *testing.B) {
	sock := swtpmtest.Start(b)
	benchEvidence(b, openSWTPM(b, sock))
}

func BenchmarkSignSWTPM(b *testing.B) {
	sock := swtpmtest.Start(b)
	be := openSWTPM(b, sock)
	d := make([]byte, 32)
	for b.Loop() {
		if _, err := be.Signer().Sign(nil, d, crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}

// serializedPCRs writes PCR values in tpm2-tools' "serialized" PCR file
// format (what tpm2_quote -o writes by default): its C structs dumped
// little-endian. TPML_PCR_SELECTION (4 + 16×8 bytes), a UINT32 count of
// TPML_DIGESTs, then TPML_DIGESTs (4 + 8×66 bytes) of up to 8 digests each.
func serializedPCRs(t *testing.T, idx []int, vals map[int][]byte) []byte {
	var b bytes.Buffer
	le := func(v any) {
		if err := binary.Write(&b, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	le(uint32(1))
	var sel [8]byte                                // TPMS_PCR_SELECTION: hash, sizeofSelect, pcrSelect[4], pad
	binary.LittleEndian.PutUint16(sel[0:], 0x000b) // TPM_ALG_SHA256
	sel[2] = 3
	for _, i := range idx {
		sel[3+i/8] |= 1 << (i % 8)
	}
	b.Write(sel[:])
	b.Write(make([]byte, 15*8))
	var chunks [][]int
	for i := 0; i < len(idx); i += 8 {
		chunks = append(chunks, idx[i:min(i+8, len(idx))])
	}
	le(uint32(len(chunks)))
	for _, c := range chunks {
		le(uint32(len(c)))
		for k := range 8 {
			var d [66]byte
			if k < len(c) {
				binary.LittleEndian.PutUint16(d[0:], uint16(len(vals[c[k]])))
				copy(d[2:], vals[c[k]])
			}
			b.Write(d[:])
		}
	}
	return b.Bytes()
}

// TestConformanceDevice runs the suite on a real TPM when
// ATTESTD_TEST_TPM names one ("/dev/tpmrm0", "unix:/path", "tcp:host:port").
// It extends the agent PCR, so use a throw-away machine.
func TestConformanceDevice(t *testing.T) {
	dev := os.Getenv("ATTESTD_TEST_TPM")
	if dev == "" {
		t.Skip("set ATTESTD_TEST_TPM to run the conformance suite on a real TPM")
	}
	attesttest.RunOptions(t, func(t *testing.T) attest.Backend {
		b, err := Open(Config{Device: dev})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}, Verifier{}, attesttest.Options{Trust: pinAK, Unauthenticated: []string{PartEKCert, PartAKCert, PartEventLog}})
}
