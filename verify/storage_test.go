package verify_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/verify"
)

// Storage policy checks on bundles made by a real agent (TPM simulator)
// whose launch recorded a storage event.

// storageLayout is a layout and the fresh PCR its environment uses (the
// simulator's PCRs 8-12 are unused; 17-22 start at all ones).
type storageLayout struct {
	pcr     int
	storage *measure.StorageMeasurement
}

// goodStorage is a build VM as docs/storage.md describes it: the root is
// read-only dm-verity with the roothash= of the command line, the runner's
// work directory and /var/tmp are plain dm-crypt with a key from
// /dev/urandom (crypttab on the root), the rest is memory or kernel file
// systems.
func goodStorage(mut func(s *measure.StorageMeasurement)) *measure.StorageMeasurement {
	crypt := func(num, kname, name, backing string) *measure.DeviceMeasurement {
		return &measure.DeviceMeasurement{Number: num, Name: kname, DM: &measure.DMMeasurement{
			Name: name, UUID: "CRYPT-PLAIN-" + name, Backing: []string{backing},
			Targets: []measure.DMTargetMeasurement{{Type: "crypt", Sectors: 41943040, Cipher: "aes-xts-plain64", KeyBits: 512, KeyType: "hex"}},
			Crypttab: &measure.CrypttabMeasurement{Device: "/dev/" + backing, KeyFile: "/dev/urandom",
				Options: []string{"plain", "cipher=aes-xts-plain64", "size=512", "tmp=ext4"}},
		}}
	}
	virtual := func(mp, fs string) measure.MountMeasurement {
		return measure.MountMeasurement{MountPoint: mp, FSType: fs, Source: fs, Writable: true, Kind: measure.MountVirtual}
	}
	s := &measure.StorageMeasurement{
		MountTable: "/proc/1/mountinfo",
		Crypttab:   "/etc/crypttab",
		Mounts: []measure.MountMeasurement{
			{MountPoint: "/", FSType: "ext4", Source: "/dev/mapper/root", Kind: measure.MountBlock,
				Device: &measure.DeviceMeasurement{Number: "253:0", Name: "dm-0", DM: &measure.DMMeasurement{
					Name: "root", UUID: "CRYPT-VERITY-6f0d8f7fa3b54bb4a6a1c4b9b1f1b0c2-root", Backing: []string{"vda2", "vda3"},
					Targets: []measure.DMTargetMeasurement{{Type: "verity", Sectors: 4194304, HashAlgorithm: "sha256", RootDigest: fixtureRootHash}},
				}}},
			virtual("/proc", "proc"),
			virtual("/sys", "sysfs"),
			virtual("/dev", "devtmpfs"),
			{MountPoint: "/run", FSType: "tmpfs", Source: "tmpfs", Writable: true, Kind: measure.MountMemory},
			{MountPoint: "/tmp", FSType: "tmpfs", Source: "tmpfs", Writable: true, Kind: measure.MountMemory},
			{MountPoint: "/var/lib/build-runner", FSType: "ext4", Source: "/dev/mapper/work", Writable: true, Kind: measure.MountBlock,
				Device: crypt("253:1", "dm-1", "work", "vdb")},
			{MountPoint: "/var/tmp", FSType: "ext4", Source: "/dev/mapper/scratch", Writable: true, Kind: measure.MountBlock,
				Device: crypt("253:2", "dm-2", "scratch", "vdc")},
		},
	}
	if mut != nil {
		mut(s)
	}
	return s
}

// mount returns the mount at mp.
func mount(s *measure.StorageMeasurement, mp string) *measure.MountMeasurement {
	for i := range s.Mounts {
		if s.Mounts[i].MountPoint == mp {
			return &s.Mounts[i]
		}
	}
	panic("no mount " + mp)
}

// otherRootHash is a root hash that is not the command line's.
var otherRootHash = strings.Repeat("cd", 32)

// storageLayouts are the environments fixtures.build makes, by name.
func storageLayouts() map[string]storageLayout {
	return map[string]storageLayout{
		"good": {8, goodStorage(nil)},
		"plain-work-dir": {9, goodStorage(func(s *measure.StorageMeasurement) {
			m := mount(s, "/var/lib/build-runner")
			m.Source, m.Device = "/dev/vdb", &measure.DeviceMeasurement{Number: "254:16", Name: "vdb"}
		})},
		"root-not-verity": {10, goodStorage(func(s *measure.StorageMeasurement) {
			m := mount(s, "/")
			m.Source, m.Device = "/dev/vda2", &measure.DeviceMeasurement{Number: "254:2", Name: "vda2"}
		})},
		"root-hash-not-cmdline": {11, goodStorage(func(s *measure.StorageMeasurement) {
			mount(s, "/").Device.DM.Targets[0].RootDigest = otherRootHash
		})},
		// The work directory's key comes from a file; /var/tmp is a LUKS
		// mapping: a header could hold its key.
		"key-file-and-luks": {12, goodStorage(func(s *measure.StorageMeasurement) {
			mount(s, "/var/lib/build-runner").Device.DM.Crypttab.KeyFile = "/etc/key"
			mount(s, "/var/tmp").Device.DM.UUID = "CRYPT-LUKS2-0f4c3b8a9d2e4f61a7b5c3d2e1f0a9b8-scratch"
		})},
	}
}

func storagePolicyFor(t *testing.T, rootHash string) *verify.Policy {
	t.Helper()
	return parsePolicy(t, fmt.Sprintf("version: 1\nstorage:\n  root_verity: %s\n  encrypted_writable: true\n", rootHash))
}

// want is a storage check's expected outcome: ok, and a substring of its
// detail.
type want struct {
	ok     bool
	detail string
}

func TestStoragePolicyChecks(t *testing.T) {
	f := getFixtures(t)
	noStorage := "the launch recorded no storage measurement (an attestd without storage measurement)"
	encryptedOK := want{true, "2 writable persistent mount(s), all dm-crypt with ephemeral keys: /var/lib/build-runner, /var/tmp"}
	rootOK := want{true, "the root file system is read-only dm-verity with root hash abababababababab… (the policy's); the kernel was booted with it"}
	for _, tc := range []struct {
		name     string
		env      *env
		rootHash string
		root     want
		enc      want
	}{
		{"verity root, encrypted work dir", f.storage["good"], fixtureRootHash, rootOK, encryptedOK},
		{"policy root hash in upper case", f.storage["good"], strings.ToUpper(fixtureRootHash), rootOK, encryptedOK},
		{"work dir on plain ext4", f.storage["plain-work-dir"], fixtureRootHash, rootOK,
			want{false, "/var/lib/build-runner (ext4 on /dev/vdb): on vdb, not an encrypted device-mapper device"}},
		{"root not verity", f.storage["root-not-verity"], fixtureRootHash,
			want{false, "the root file system (ext4 on /dev/vda2) is not on a device-mapper device"},
			want{false, "/var/lib/build-runner (ext4 on /dev/mapper/work): its crypttab /etc/crypttab is not on a verified root"}},
		{"root hash not the policy's", f.storage["good"], otherRootHash,
			want{false, "the root is dm-verity with root hash " + fixtureRootHash + ", not the policy's " + otherRootHash}, encryptedOK},
		{"root hash not the command line's", f.storage["root-hash-not-cmdline"], otherRootHash,
			want{false, "the root is dm-verity with root hash " + otherRootHash + ", but the kernel was booted with roothash=" + fixtureRootHash}, encryptedOK},
		{"crypt key from a file, LUKS mapping", f.storage["key-file-and-luks"], fixtureRootHash, rootOK,
			want{false, `/var/lib/build-runner (ext4 on /dev/mapper/work): work takes its key from "/etc/key", not from /dev/urandom or /dev/random; ` +
				`/var/tmp (ext4 on /dev/mapper/scratch): scratch (UUID "CRYPT-LUKS2-0f4c3b8a9d2e4f61a7b5c3d2e1f0a9b8-scratch") is not a plain dm-crypt mapping: a header could hold its key`}},
		{"no storage event: tpm", f.tpm, fixtureRootHash, want{false, noStorage}, want{false, noStorage}},
		{"no storage event: snp", f.snp, fixtureRootHash, want{false, noStorage}, want{false, noStorage}},
		{"no storage event: tdx", f.tdx, fixtureRootHash, want{false, noStorage}, want{false, noStorage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tp := withPolicy(tc.env, storagePolicyFor(t, tc.rootHash))
			ev := evaluate(tp.policy, tp.inputs, tp.opts, time.Time{})
			checkStorage(t, ev, verify.CheckPolicyStorageRootVerity, tc.root)
			checkStorage(t, ev, verify.CheckPolicyStorageEncrypted, tc.enc)
			// Nothing else fails: the storage checks are the reason.
			var wantFailed []string
			if !tc.root.ok {
				wantFailed = append(wantFailed, verify.CheckPolicyStorageRootVerity)
			}
			if !tc.enc.ok {
				wantFailed = append(wantFailed, verify.CheckPolicyStorageEncrypted)
			}
			if got := failedChecks(ev); !slices.Equal(got, wantFailed) {
				t.Errorf("failed checks %v, want %v", got, wantFailed)
			}
			if ev.OK != (len(wantFailed) == 0) {
				t.Errorf("verified = %v", ev.OK)
			}
		})
	}
}

// checkStorage finds the policy check name of the only bundle.
func checkStorage(t *testing.T, ev *verify.Evaluation, name string, w want) {
	t.Helper()
	for _, c := range ev.Bundles[0].Policy {
		if c.Name != name {
			continue
		}
		if c.OK != w.ok || !strings.Contains(c.Detail, w.detail) {
			t.Errorf("%s ok=%v %q; want ok=%v with %q", name, c.OK, c.Detail, w.ok, w.detail)
		}
		t.Logf("%s ok=%v: %s", name, c.OK, c.Detail)
		return
	}
	t.Errorf("no %s check", name)
}

// The storage checks read only an authenticated log: with the AK not
// trusted, the good bundle fails them; a good storage event inserted into a
// launch that measured none is not read either.
func TestStorageChecksNeedAuthenticatedLog(t *testing.T) {
	f := getFixtures(t)
	untrusted := withPolicy(f.storage["good"], storagePolicyFor(t, fixtureRootHash))
	untrusted.opts.TrustedAKs = nil
	e := f.tpm
	inserted := one(e, editCEL(t, e, cloneBundle(e), iLaunch, func(r [][]byte) [][]byte {
		return forgeCEL(t, r, measure.EventImage, goodStorageEvent(t))
	}))
	inserted.policy = storagePolicyFor(t, fixtureRootHash)
	for name, tp := range map[string]tampered{"AK not trusted": untrusted, "storage event inserted": inserted} {
		t.Run(name, func(t *testing.T) {
			ev := evaluate(tp.policy, tp.inputs, tp.opts, time.Time{})
			for _, check := range []string{verify.CheckPolicyStorageRootVerity, verify.CheckPolicyStorageEncrypted} {
				checkStorage(t, ev, check, want{false, "launch attestation: no authenticated event log"})
			}
		})
	}
}

// storage.root_verity: reference takes the roothash of the signed
// reference values.
func TestStorageRootVerityReference(t *testing.T) {
	e := getFixtures(t).storage["good"]
	for _, tc := range []struct {
		name      string
		rootHash  string
		ok        bool
		detail    string
		refFailed []string
	}{
		{"reference roothash", fixtureRootHash, true, "root hash abababababababab… (the reference values'); the kernel was booted with it", nil},
		{"other reference roothash", otherRootHash, false, "not the reference values' " + otherRootHash, []string{verify.CheckRefRootHash}},
		{"reference without roothash", "", false, "the reference values name no roothash", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := refPolicy(t, e, func(rv *verify.ReferenceValues) { rv.RootHash = tc.rootHash })
			p.Storage.RootVerity = &verify.RootVerity{Reference: true}
			tp := withPolicy(e, p)
			ev := evaluate(tp.policy, tp.inputs, tp.opts, time.Time{})
			checkStorage(t, ev, verify.CheckPolicyStorageRootVerity, want{tc.ok, tc.detail})
			wantFailed := tc.refFailed
			if !tc.ok {
				wantFailed = append(slices.Clone(wantFailed), verify.CheckPolicyStorageRootVerity)
			}
			got := failedChecks(ev)
			slices.Sort(got)
			got = slices.Compact(got)
			slices.Sort(wantFailed)
			if !slices.Equal(got, wantFailed) {
				t.Errorf("failed checks %v, want %v", got, wantFailed)
			}
		})
	}
}

// Reference values predict the launch without the storage event: a
// storage event does not break reference-agent-register, a changed binary
// still does, and the difference named is the binary's.
func TestReferenceIgnoresStorageEvent(t *testing.T) {
	e := getFixtures(t).storage["good"]
	// The storage event really is in the register: the full launch prefix
	// replays to another value than the reference predicts.
	_, full := launchOf(t, e)
	if full == e.launch {
		t.Fatal("the storage event did not change the launch value")
	}
	appraise := func(t *testing.T, rv *verify.ReferenceValues) attest.Check {
		t.Helper()
		rep := verify.BundleReport(e.raw(), e.opts)
		var out *attest.Check
		for _, r := range rep.Results {
			if r.Purpose != attest.PurposeLaunch && r.Purpose != attest.PurposeAttest {
				continue
			}
			for _, c := range r.Appraise(rv) {
				if c.Name == verify.CheckRefAgentRegister {
					if out != nil && out.OK != c.OK {
						t.Fatalf("launch and admission disagree: %+v / %+v", *out, c)
					}
					out = &c
				}
			}
		}
		if out == nil {
			t.Fatal("no reference-agent-register check")
		}
		return *out
	}
	rv := &verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: e.register, Launch: e.launch, Events: refEvents(e.launchEvents)}}
	c := appraise(t, rv)
	if !c.OK || !strings.Contains(c.Detail, "and 1 storage event(s), which reference values do not predict") {
		t.Errorf("storage event in the launch: %s ok=%v %q", c.Name, c.OK, c.Detail)
	}

	// Another attestd binary in the image: the prediction changes, the
	// storage event is not what the diff names.
	evs := slices.Clone(e.launchEvents)
	if evs[0].Type != measure.EventBinary {
		t.Fatalf("first launch event is %s", evs[0].Type)
	}
	bin, err := measure.FileEventFromDigest(measure.EventBinary, "/usr/bin/attestd", sha256.Sum256([]byte("another attestd")))
	if err != nil {
		t.Fatal(err)
	}
	evs[0] = bin
	v, err := measure.PredictRegister(crypto.SHA256, evs)
	if err != nil {
		t.Fatal(err)
	}
	rv = &verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: e.register, Launch: hex.EncodeToString(v), Events: refEvents(evs)}}
	c = appraise(t, rv)
	if c.OK || !strings.Contains(c.Detail, "without storage events") || !strings.Contains(c.Detail, "first difference at event 0: binary") {
		t.Errorf("changed binary: %s ok=%v %q", c.Name, c.OK, c.Detail)
	}
	t.Logf("changed binary: %s", c.Detail)

	// The whole policy path too: the good bundle passes reference values and
	// the storage policy together.
	p := refPolicy(t, e, func(rv *verify.ReferenceValues) { rv.RootHash = fixtureRootHash })
	p.Storage = verify.StoragePolicy{RootVerity: &verify.RootVerity{Reference: true}, EncryptedWritable: true}
	tp := withPolicy(e, p)
	if ev := evaluate(tp.policy, tp.inputs, tp.opts, time.Time{}); !ev.OK {
		t.Errorf("good storage bundle under reference + storage policy: failed %v", failedChecks(ev))
	}
}

// launchOf returns the launch records of e's agent log and the value their
// full replay gives.
func launchOf(t *testing.T, e *env) ([]measure.Record, string) {
	t.Helper()
	rep := verify.BundleReport(e.raw(), e.opts)
	prefix, ok := measure.LaunchPrefix(rep.Results[0].Events)
	if !ok {
		t.Fatal("no launch prefix")
	}
	kind, idx := measure.PCR, 0
	for _, r := range prefix {
		idx = r.Index
	}
	v, err := measure.Replay(prefix, crypto.SHA256, kind, idx)
	if err != nil {
		t.Fatal(err)
	}
	return prefix, hex.EncodeToString(v)
}

func refEvents(evs []measure.Event) []verify.ReferenceEvent {
	out := make([]verify.ReferenceEvent, len(evs))
	for i, e := range evs {
		out[i] = verify.ReferenceEvent{Type: e.Type.String(), Data: e.Data}
	}
	return out
}

// forgeCEL rewrites a CEL (as records) with ins recorded after the first
// event of type after: every record well formed with the right digests,
// but the log no longer what the register holds.
func forgeCEL(t *testing.T, raw [][]byte, after measure.EventType, ins measure.Event) [][]byte {
	t.Helper()
	recs, err := measure.ParseCEL(bytes.Join(raw, nil))
	if err != nil {
		t.Fatal(err)
	}
	l, err := measure.OpenLog(measure.LogConfig{Path: filepath.Join(t.TempDir(), "forged.cel"), Kind: recs[0].Kind, Index: recs[0].Index})
	if err != nil {
		t.Fatal(err)
	}
	var ext nopExtender
	for h := range recs[0].Digests {
		ext = append(ext, h)
	}
	inserted := false
	for _, r := range recs {
		if err := l.Record(context.Background(), ext, measure.Event{Type: r.Type, Data: r.Data}); err != nil {
			t.Fatal(err)
		}
		if r.Type == after && !inserted {
			if err := l.Record(context.Background(), ext, ins); err != nil {
				t.Fatal(err)
			}
			inserted = true
		}
	}
	if !inserted {
		t.Fatalf("no %s event to insert after", after)
	}
	return celRecords(l.Bytes())
}

// nopExtender extends nothing.
type nopExtender []crypto.Hash

func (n nopExtender) Banks() []crypto.Hash                               { return n }
func (nopExtender) Extend(context.Context, map[crypto.Hash][]byte) error { return nil }

// goodStorageEvent is the storage event of the good layout.
func goodStorageEvent(t *testing.T) measure.Event {
	t.Helper()
	ev, err := measure.StorageEvent(*goodStorage(nil))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
