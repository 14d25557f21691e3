package verify

import (
	"crypto"
	"strings"
	"testing"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
)

// A storage event as attestd records it: verity root, one plain dm-crypt
// work directory keyed from /dev/urandom.
const storageSeed = `{"mountTable":"/proc/1/mountinfo","crypttab":"/etc/crypttab","mounts":[` +
	`{"mountPoint":"/","fsType":"ext4","source":"/dev/mapper/root","writable":false,"kind":"block","device":{"number":"253:0","name":"dm-0","dm":{"name":"root","uuid":"CRYPT-VERITY-x-root","backing":["vda2","vda3"],"targets":[{"type":"verity","sectors":4194304,"hashAlgorithm":"sha256","rootDigest":"` + storageSeedRoot + `"}]}}},` +
	`{"mountPoint":"/proc","fsType":"proc","source":"proc","writable":true,"kind":"virtual"},` +
	`{"mountPoint":"/tmp","fsType":"tmpfs","source":"tmpfs","writable":true,"kind":"memory"},` +
	`{"mountPoint":"/var/lib/build-runner","fsType":"ext4","source":"/dev/mapper/work","writable":true,"kind":"block","device":{"number":"253:1","name":"dm-1","dm":{"name":"work","uuid":"CRYPT-PLAIN-work","backing":["vdb"],"targets":[{"type":"crypt","sectors":41943040,"cipher":"aes-xts-plain64","keyBits":512,"keyType":"hex"}],"crypttab":{"device":"/dev/vdb","keyFile":"/dev/urandom","options":["plain","tmp=ext4"]}}}}]}`

// storageSeedRoot is the root hash in storageSeed and on the command line.
const storageSeedRoot = "5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e5a4e"

// launchResult is a Result whose log (image, storage events, separator)
// counts as authenticated.
func launchResult(storage ...string) *Result {
	recs := []measure.Record{{ContentType: measure.ContentType, Type: measure.EventImage, Data: []byte(`{"roothash":"` + storageSeedRoot + `"}`)}}
	for _, s := range storage {
		recs = append(recs, measure.Record{ContentType: measure.ContentType, Type: measure.EventStorage, Data: []byte(s)})
	}
	recs = append(recs, measure.Record{ContentType: measure.ContentType, Type: measure.EventSeparator, Data: []byte(`{"phase":"launch"}`)})
	return &Result{Purpose: attest.PurposeLaunch, Events: recs, registers: map[measure.Register][]byte{}, bank: crypto.SHA256}
}

func TestStorageEventDecoding(t *testing.T) {
	good := launchResult(storageSeed)
	if d, err := storageRootVerity(good, storageSeedRoot, "the policy's"); err != nil {
		t.Errorf("root verity: %v", err)
	} else {
		t.Log(d)
	}
	if d, err := storageEncrypted(good); err != nil || d != "1 writable persistent mount(s), all dm-crypt with ephemeral keys: /var/lib/build-runner" {
		t.Errorf("encrypted: %q, %v", d, err)
	}
	for _, tc := range []struct {
		name    string
		storage []string
		want    string
	}{
		{"not JSON", []string{`{"mounts":[`}, "storage event: unexpected EOF"},
		{"null", []string{`null`}, "storage event: not a JSON object"},
		{"array", []string{`[]`}, "storage event: not a JSON object"},
		{"unknown field", []string{strings.Replace(storageSeed, `"crypttab":"/etc/crypttab",`, `"crypttab":"/etc/crypttab","extra":1,`, 1)}, `storage event: json: unknown field "extra"`},
		{"trailing data", []string{storageSeed + ` {}`}, "storage event: data after the JSON object"},
		{"wrong type", []string{`{"mounts":[{"writable":"yes"}]}`}, "storage event: json: cannot unmarshal string"},
		{"unknown kind", []string{strings.Replace(storageSeed, `"kind":"memory"`, `"kind":"ram"`, 1)}, `storage event: mount /tmp has unknown kind "ram"`},
		{"no root mount", []string{`{"mountTable":"/proc/1/mountinfo","mounts":[]}`}, "storage event: the mount table has no root mount"},
		{"no storage event", nil, "the launch recorded no storage measurement"},
		{"two storage events", []string{storageSeed, storageSeed}, "the launch recorded 2 storage measurements, want exactly one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := launchResult(tc.storage...)
			for name, f := range map[string]func(*Result) (string, error){
				CheckPolicyStorageEncrypted:  storageEncrypted,
				CheckPolicyStorageRootVerity: func(r *Result) (string, error) { return storageRootVerity(r, storageSeedRoot, "the policy's") },
			} {
				if _, err := f(r); err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: err = %v, want %q", name, err, tc.want)
				}
			}
		})
	}
	// An image event that does not decode fails root-verity only.
	r := launchResult(storageSeed)
	r.Events[0].Data = []byte(`{"roothash":1}`)
	if _, err := storageRootVerity(r, storageSeedRoot, "the policy's"); err == nil || !strings.HasPrefix(err.Error(), "image event: ") {
		t.Errorf("bad image event: %v", err)
	}
	if _, err := storageEncrypted(r); err != nil {
		t.Errorf("bad image event, encrypted: %v", err)
	}
	// Not authenticated: nothing is read.
	r = launchResult(storageSeed)
	r.registers = nil
	if _, err := storageEncrypted(r); err == nil || !strings.Contains(err.Error(), "no authenticated event log") {
		t.Errorf("unauthenticated: %v", err)
	}
}

// FuzzStorageEvent: the storage checks never panic on any event data, and
// pass only on data that decodes strictly.
func FuzzStorageEvent(f *testing.F) {
	f.Add([]byte(storageSeed))
	f.Add([]byte(`{"mountTable":"/proc/1/mountinfo","mounts":[{"mountPoint":"/","kind":"block","device":{"dm":{}}}]}`))
	f.Add([]byte(`{"mounts":[{"mountPoint":"/","kind":"other","writable":true}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := launchResult(string(data))
		_, rootErr := storageRootVerity(r, storageSeedRoot, "the policy's")
		_, encErr := storageEncrypted(r)
		if rootErr == nil || encErr == nil {
			if _, err := measure.ParseStorage(data); err != nil {
				t.Fatalf("a check passed on data that does not decode: %v", err)
			}
		}
	})
}
