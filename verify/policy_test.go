package verify

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestPolicyExampleParses(t *testing.T) {
	raw, err := os.ReadFile("../docs/policy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy(raw)
	if err != nil {
		t.Fatalf("docs/policy.example.yaml: %v", err)
	}
	if p.Require.Level != 2 || p.Trust.SNP.MinimumTCB.Microcode != 115 || !p.Build.OneBuild() {
		t.Errorf("parsed %+v", p)
	}
	if rv := p.Storage.RootVerity; rv == nil || !rv.Reference || !p.Storage.EncryptedWritable {
		t.Errorf("storage: parsed %+v", p.Storage)
	}
}

func TestStoragePolicyParses(t *testing.T) {
	h := strings.Repeat("5a4e", 16)
	var hash RootVerity
	if err := hash.UnmarshalText([]byte(h)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		yaml string
		want StoragePolicy
	}{
		{"version: 1\n", StoragePolicy{}},
		{"version: 1\nstorage: {}\n", StoragePolicy{}},
		{"version: 1\nstorage:\n  root_verity: " + h + "\n", StoragePolicy{RootVerity: &hash}},
		{"version: 1\nstorage:\n  root_verity: " + strings.ToUpper(h) + "\n  encrypted_writable: true\n", StoragePolicy{RootVerity: &hash, EncryptedWritable: true}},
		{"version: 1\nreference: {file: r.json, keys: [k.pem]}\nstorage: {root_verity: reference, encrypted_writable: false}\n", StoragePolicy{RootVerity: &RootVerity{Reference: true}}},
	} {
		p, err := ParsePolicy([]byte(tc.yaml))
		if err != nil {
			t.Errorf("%q: %v", tc.yaml, err)
			continue
		}
		if diff := cmp.Diff(tc.want, p.Storage); diff != "" {
			t.Errorf("%q: storage (-want +got):\n%s", tc.yaml, diff)
		}
	}
}

func TestPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		line       int
		key        string
	}{
		{"unknown top key", "version: 1\ntrusts: {}\n", 2, "trusts"},
		{"unknown nested key", "version: 1\ntrust:\n  tpm:\n    pinned_ak: [a.pem]\n", 4, "trust.tpm.pinned_ak"},
		{"wrong type", "version: 1\nrequire:\n  level: high\n", 3, "require.level"},
		{"list wanted", "version: 1\nrequire:\n  registers: PCR0\n", 3, "require.registers"},
		{"bool wanted", "version: 1\ntrust: {tpm: {hardware: yes please}}\n", 2, "trust.tpm.hardware"},
		{"bad version", "version: 2\n", 1, "version"},
		{"bad hex", "version: 1\ntrust:\n  snp:\n    measurements: [abcd]\n", 4, "trust.snp.measurements[0]"},
		{"bad register", "version: 1\nrequire:\n  registers: [PCR0, XYZ1]\n", 3, "require.registers[1]"},
		{"bad level", "version: 1\nrequire: {level: 4}\n", 2, "require.level"},
		{"bad duration", "version: 1\nfreshness:\n  max_age: soon\n", 3, "freshness.max_age"},
		{"bad nonce purpose", "version: 1\nfreshness:\n  nonces: {launch: '00'}\n", 3, "freshness.nonces.launch"},
		{"reference without key", "version: 1\nreference:\n  file: r.json\n", 3, "reference"},
		{"bad build id", "version: 1\nbuild: {id: 'has space'}\n", 2, "build.id"},
		{"duplicate key", "version: 1\nversion: 1\n", 2, "version"},
		{"tdx rtmrs count", "version: 1\ntrust:\n  tdx:\n    rtmrs: ['" + strings.Repeat("00", 48) + "']\n", 4, "trust.tdx.rtmrs"},
		{"alias", "version: 1\nx: &a 1\nrequire: {level: *a}\n", 2, "x"},
		{"storage root hash not hex", "version: 1\nstorage:\n  root_verity: '" + strings.Repeat("zz", 32) + "'\n", 3, "storage.root_verity"},
		{"storage root hash short", "version: 1\nstorage:\n  root_verity: abcd\n", 3, "storage.root_verity"},
		{"storage reference without reference.file", "version: 1\nstorage:\n  encrypted_writable: true\n  root_verity: reference\n", 4, "storage.root_verity"},
		{"storage unknown key", "version: 1\nstorage:\n  encrypted: true\n", 3, "storage.encrypted"},
		{"storage not a bool", "version: 1\nstorage: {encrypted_writable: always}\n", 2, "storage.encrypted_writable"},
		{"secure_boot not a bool", "version: 1\nrequire:\n  secure_boot: on please\n", 3, "require.secure_boot"},
		{"firmware_log not a bool", "version: 1\nrequire: {firmware_log: 1}\n", 2, "require.firmware_log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tc.yaml))
			var pe *PolicyError
			if !errors.As(err, &pe) || !errors.Is(err, ErrPolicy) {
				t.Fatalf("err = %v, want a *PolicyError", err)
			}
			if pe.Line != tc.line || pe.Key != tc.key {
				t.Errorf("error %q at line %d key %q, want line %d key %q", err, pe.Line, pe.Key, tc.line, tc.key)
			}
		})
	}
	for _, bad := range []string{"", "---\n", "[1, 2]", "version: 1\n\t- x"} {
		if _, err := ParsePolicy([]byte(bad)); !errors.Is(err, ErrPolicy) {
			t.Errorf("%q: err = %v, want ErrPolicy", bad, err)
		}
	}
}

// FuzzParsePolicy: parsing never panics; what parses validates again.
func FuzzParsePolicy(f *testing.F) {
	if raw, err := os.ReadFile("../docs/policy.example.yaml"); err == nil {
		f.Add(raw)
	}
	f.Add([]byte("version: 1\nrequire: {level: 2, registers: [PCR0]}\n"))
	f.Add([]byte("version: 1\nreference: {registers: {RTMR1: ['00']}}\n"))
	f.Add([]byte("version: 1\nstorage: {root_verity: reference, encrypted_writable: true}\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := ParsePolicy(raw)
		if err != nil {
			if !errors.Is(err, ErrPolicy) {
				t.Fatalf("error %v is not ErrPolicy", err)
			}
			return
		}
		if err := p.validate(); err != nil {
			t.Fatalf("parsed policy fails validation: %v", err)
		}
		// What parses renders to YAML that parses to the same policy.
		out, err := p.Render()
		if err != nil {
			t.Fatalf("render: %v", err)
		}
		q, err := ParsePolicy(out)
		if err != nil {
			t.Fatalf("rendered policy does not parse: %v\n%s", err, out)
		}
		q.nodes, q.Digest = p.nodes, p.Digest
		if diff := cmp.Diff(p, q, cmp.AllowUnexported(Policy{}), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("rendered policy parses differently (-first +second):\n%s", diff)
		}
	})
}

// TestPolicyChecksDocumented: docs/verifying.md names every policy check.
func TestPolicyChecksDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/verifying.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range append(PolicyChecks(), CheckOneBuildPerEnv) {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/verifying.md does not name the policy check %s", name)
		}
	}
}
