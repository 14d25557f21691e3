package measure

import (
	"bytes"
	"crypto"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/attestd/attestd/internal/petest"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// testdata/ovmf-uki-firmware.log is the firmware event log of a real boot of
// the e2e image (images/e2e.sh): QEMU TCG, OVMF_CODE_4M.fd of Debian
// bookworm, swtpm with a sha256 bank, the UKI as \EFI\BOOT\BOOTX64.EFI with
// Debian's systemd 252 stub. This test pins the structure PredictPCR4 and
// PCR11Events assume (docs/reference-values.md); the e2e test checks the
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

// testdata/ovmf-e2e-firmware.log is the firmware event log inside
// verify/testdata/e2e's bundle (the same boot as its reference values):
// e2eCmdline is that image's .cmdline.
const e2eCmdline = "console=ttyS0 roothash=7e40ea405550193adf3d0d0d83eeeb60ab3903c643423aa236a2d170fe9188e7 ro panic=-1 no_timer_check systemd.show_status=error"

// TestBootPredictionsMatchOVMFLogs: PCR 7 (Secure Boot off, no keys), PCR 9
// (the kernel's load options and initrd) and PCR 12 (nothing) as predicted,
// in both real logs.
func TestBootPredictionsMatchOVMFLogs(t *testing.T) {
	for _, name := range []string{"ovmf-uki-firmware.log", "ovmf-e2e-firmware.log"} {
		t.Run(name, func(t *testing.T) {
			byPCR := firmwareLogByPCR(t, name)
			pcr9 := byPCR[9]
			if len(pcr9) != 2 || pcr9[0].What != LinuxLoadOptions || pcr9[1].What != LinuxInitrd || pcr9[0].Type != "EV_EVENT_TAG" {
				t.Fatalf("PCR 9 events: %+v", pcr9)
			}
			if len(byPCR[12]) != 0 {
				t.Errorf("PCR 12 has events: %+v", byPCR[12])
			}
			if name != "ovmf-e2e-firmware.log" {
				return
			}
			want := KernelEvents(crypto.SHA256, e2eCmdline, nil)
			if !bytes.Equal(want[0].Digest, pcr9[0].Digest) {
				t.Errorf("load options digest %x, log %x", want[0].Digest, pcr9[0].Digest)
			}
			// The quoted PCR 9 of that boot (the bundle's tpm/pcrs).
			if got := PCRValue(crypto.SHA256, pcr9); hex.EncodeToString(got) != "04bb0a6e1541c3eb8830cfd0629f8707d15edddae8f80c5497e693ce88a98a16" {
				t.Errorf("PCR 9 replays to %x", got)
			}
		})
	}
}

func FuzzParseFirmwareLog(f *testing.F) {
	for _, name := range []string{"ovmf-uki-firmware.log", "ovmf-e2e-firmware.log", "ovmf-cmdline-override-firmware.log", "ovmf-esp-credential-firmware.log"} {
		if raw, err := os.ReadFile("testdata/" + name); err == nil {
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		evs, err := ParseFirmwareLog(raw)
		if err != nil {
			return
		}
		for _, e := range evs {
			if len(e.Digest) != crypto.SHA256.Size() || len(e.What) > 4*81 {
				t.Fatalf("event %+v", e)
			}
		}
	})
}

// The firmware logs of two attacks on the e2e image that took effect in the
// guest (images/e2e.sh): a boot entry with load options, and a credential
// on the ESP. With Secure Boot off, systemd-stub measures the overriding
// command line into PCR 12 and hands it to the kernel, which measures it
// into PCR 9 as load options; a credential goes into PCR 12 and is
// appended to the initrd PCR 9 measures.
func TestOVMFLogsOfBootAttacks(t *testing.T) {
	const injected = "console=ttyS0 roothash=63b873ad9a4c131ac64ff382d288a1b21cb1ea47125448764529a5f4811014cf ro panic=-1 no_timer_check systemd.show_status=error attestd.injected=1 systemd.debug_shell"
	override := firmwareLogByPCR(t, "ovmf-cmdline-override-firmware.log")
	want := KernelEvents(crypto.SHA256, injected, nil)[0]
	if p12 := override[12]; len(p12) != 1 || p12[0].Type != "EV_IPL" || !bytes.Equal(p12[0].Digest, want.Digest) {
		t.Errorf("override: PCR 12 %+v, want one EV_IPL of the injected command line", p12)
	}
	if p9 := override[9]; len(p9) != 2 || !bytes.Equal(p9[0].Digest, want.Digest) {
		t.Errorf("override: PCR 9 %+v, want the injected command line as load options", p9)
	}
	cred := firmwareLogByPCR(t, "ovmf-esp-credential-firmware.log")
	if p12 := cred[12]; len(p12) != 1 || p12[0].Type != "EV_IPL" || p12[0].What != "Global credentials initrd" {
		t.Errorf("credential: PCR 12 %+v, want one EV_IPL \"Global credentials initrd\"", p12)
	}
}

// firmwareLogByPCR reads testdata/name, a firmware log of an e2e boot with
// Secure Boot off (checked here), by PCR.
func firmwareLogByPCR(t *testing.T, name string) map[int][]FirmwareEvent {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := ParseFirmwareLog(raw)
	if err != nil {
		t.Fatal(err)
	}
	byPCR := map[int][]FirmwareEvent{}
	for _, e := range evs {
		byPCR[e.PCR] = append(byPCR[e.PCR], e)
	}
	if diff := cmp.Diff(SecureBootOffEvents(crypto.SHA256), byPCR[7]); diff != "" {
		t.Errorf("%s: PCR 7 (-predicted +log):\n%s", name, diff)
	}
	return byPCR
}

// TestUKIKernelEventsWithSysexts: the initrd the kernel measures is the
// .initrd section padded to 4 bytes, then the sysext archive.
func TestUKIKernelEventsWithSysexts(t *testing.T) {
	initrd := []byte("12345") // 5 bytes: 3 of padding
	img := petest.UKI("ro", initrd)
	files := func() []SysextFile {
		return []SysextFile{{Name: "a.raw", Size: 3, Content: strings.NewReader("abc")}}
	}
	evs, err := UKIKernelEventsWithSysexts(crypto.SHA256, img, files())
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if err := WriteSysextArchive(&archive, files()); err != nil {
		t.Fatal(err)
	}
	want := digestOf(crypto.SHA256, append(append(slices.Clone(initrd), 0, 0, 0), archive.Bytes()...))
	if len(evs) != 2 || evs[1].What != LinuxInitrd || !bytes.Equal(evs[1].Digest, want) {
		t.Errorf("events %+v, want the initrd event %x", evs, want)
	}
	plain, err := UKIKernelEventsWithSysexts(crypto.SHA256, img, nil)
	if err != nil || !bytes.Equal(plain[1].Digest, digestOf(crypto.SHA256, initrd)) {
		t.Errorf("without sysexts: %+v, %v", plain, err)
	}
}
