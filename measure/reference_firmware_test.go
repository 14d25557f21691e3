package measure

import (
	"bytes"
	"crypto"
	"os"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// testdata/ovmf-uki-firmware.log is the firmware event log of a real boot of
// the e2e image (images/e2e.sh): QEMU TCG, OVMF_CODE_4M.fd of Debian
// bookworm, swtpm with a sha256 bank, the UKI as \EFI\BOOT\BOOTX64.EFI with
// Debian's systemd 252 stub. This test pins the structure PredictPCR4 and
// PredictPCR11 assume (docs/reference-values.md); the e2e test checks the
// values.
func TestPredictionsMatchOVMFLog(t *testing.T) {
	raw, err := os.ReadFile("testdata/ovmf-uki-firmware.log")
	if err != nil {
		t.Fatal(err)
	}
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		t.Fatal(err)
	}
	byPCR := map[int][]tcg.Event{}
	for _, e := range el.Events(register.HashSHA256) {
		byPCR[e.Index] = append(byPCR[e.Index], e)
	}
	replay := func(evs []tcg.Event) []byte {
		var ds [][]byte
		for _, e := range evs {
			ds = append(ds, e.Digest)
		}
		return ExtendAll(crypto.SHA256, make([]byte, 32), ds)
	}

	// PCR 4: action, separator, the UKI, the kernel inside it.
	pcr4 := byPCR[4]
	wantTypes := []tcg.EventType{tcg.EFIAction, tcg.Separator, tcg.EFIBootServicesApplication, tcg.EFIBootServicesApplication}
	if len(pcr4) != len(wantTypes) {
		t.Fatalf("PCR 4 has %d events, want %d", len(pcr4), len(wantTypes))
	}
	for i, e := range pcr4 {
		if e.Type != wantTypes[i] {
			t.Errorf("PCR 4 event %d is %v, want %v", i, e.Type, wantTypes[i])
		}
	}
	if got := PredictPCR4(crypto.SHA256, [][]byte{pcr4[2].Digest, pcr4[3].Digest}); !bytes.Equal(got, replay(pcr4)) {
		t.Errorf("PredictPCR4 = %x, log replays to %x", got, replay(pcr4))
	}

	// PCR 11: systemd-stub's name-then-contents pairs in UKISections order
	// for the sections the bake puts in the UKI, and nothing else.
	pcr11 := byPCR[11]
	names := []string{".linux", ".osrel", ".cmdline", ".initrd"}
	if len(pcr11) != 2*len(names) {
		t.Fatalf("PCR 11 has %d events, want %d", len(pcr11), 2*len(names))
	}
	for i, n := range names {
		if e := pcr11[2*i]; !bytes.Equal(e.Digest, digestOf(crypto.SHA256, append([]byte(n), 0))) {
			t.Errorf("PCR 11 event %d is not the name %q with its NUL", 2*i, n)
		}
	}
	for i, n := range UKISections[:len(names)] {
		if n != names[i] {
			t.Errorf("UKISections[%d] = %s, the stub measured %s", i, n, names[i])
		}
	}
}
