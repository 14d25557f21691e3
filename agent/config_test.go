package agent

import (
	"errors"
	"testing"
	"time"

	"github.com/attestd/attestd/internal/yamlfile"
)

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		check      func(*Config) bool
	}{
		{"empty", "", func(c *Config) bool { return c.Backend == "auto" && c.Register == 13 && c.TPMTimeout == 0 }},
		{"comments only", "# nothing\n", func(c *Config) bool { return c.Backend == "auto" }},
		{"full", "backend: tpm\ntpm: {device: unix:/x, timeout: 45s}\nregister: 14\nexecutors: [/bin/sh]\nallow: {readers: {uids: [1], gids: [2]}, executors: {uids: [3]}}\n",
			func(c *Config) bool {
				return c.Backend == "tpm" && c.TPMDevice == "unix:/x" && c.TPMTimeout == 45*time.Second && c.Register == 14 &&
					len(c.Executors) == 1 && len(c.Readers.UIDs) == 1 && c.Builders.UIDs[0] == 3
			}},
		{"storage", "storage:\n  encrypted: [/var/lib/build-runner, /scratch]\n", func(c *Config) bool { return len(c.EncryptedPaths) == 2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig("config.yaml", []byte(tc.yaml))
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !tc.check(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}

// TestConfigErrors: each error names the file, the line, the key and what
// is allowed there, in the words a person reads.
func TestConfigErrors(t *testing.T) {
	const path = "/etc/attestd/config.yaml"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown key", "bakend: tpm\n",
			"line 1: bakend: unknown key (known here: allow, backend, executors, image_metadata, register, storage, tpm)"},
		{"unknown nested key", "backend: tpm\ntpm:\n  device: /dev/tpmrm0\n  registr: 14\n",
			"line 4: tpm.registr: unknown key (known here: device, timeout)"},
		{"unknown storage key", "storage: {encrypt: [/x]}\n",
			"line 1: storage.encrypt: unknown key (known here: encrypted)"},
		{"unknown allow key", "allow:\n  executors:\n    users: [1001]\n",
			"line 3: allow.executors.users: unknown key (known here: gids, uids)"},
		{"key twice", "backend: tpm\nbackend: snp\n",
			"line 2: backend: key given twice"},
		{"bad backend", "register: 14\nbackend: magic\n",
			`line 2: backend: unknown backend "magic" (want auto, tpm, snp, tdx, simulator)`},
		{"backend not a string", "backend: [tpm]\n",
			"line 1: backend: want a string"},
		{"register 16", "register: 16\n",
			"line 1: register: PCR 16 is resettable and cannot hold evidence (want 8 to 22, not 16)"},
		{"register 23", "register: 23\n",
			"line 1: register: PCR 23 is resettable and cannot hold evidence (want 8 to 22, not 16)"},
		{"register 3", "register: 3\n",
			"line 1: register: PCR 3 belongs to the firmware (want 8 to 22, not 16)"},
		{"register 99", "register: 99\n",
			"line 1: register: want a PCR index from 8 to 22, got 99"},
		{"register word", "register: thirteen\n",
			`line 1: register: want a PCR index from 8 to 22, got "thirteen"`},
		{"bad duration", "tpm:\n  timeout: 30\n",
			`line 2: tpm.timeout: want a duration such as 30s or 15m, got "30"`},
		{"short timeout", "tpm:\n  timeout: 10ms\n",
			"line 2: tpm.timeout: want at least 100ms, got 10ms"},
		{"executors not a list", "executors: /bin/sh\n",
			"line 1: executors: want a list"},
		{"relative executor", "executors:\n  - /bin/sh\n  - sh\n",
			`line 3: executors[1]: want an absolute path, got "sh"`},
		{"relative storage path", "storage: {encrypted: [var/lib/build-runner]}\n",
			`line 1: storage.encrypted[0]: want an absolute path, got "var/lib/build-runner"`},
		{"relative image metadata", "image_metadata: image.json\n",
			`line 1: image_metadata: want an absolute path, got "image.json"`},
		{"negative uid", "allow: {readers: {uids: [-1]}}\n",
			`line 1: allow.readers.uids[0]: want an integer from 0 to 4294967295, got "-1"`},
		{"uid name", "allow: {readers: {uids: [root]}}\n",
			`line 1: allow.readers.uids[0]: want an integer from 0 to 4294967295, got "root"`},
		{"not a mapping", "- backend: tpm\n",
			"line 1: want a mapping"},
		{"syntax", "backend: tpm\n  register: 14\n",
			"line 2: mapping values are not allowed in this context"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig(path, []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if want := "config " + path + ": " + tc.want; err.Error() != want {
				t.Errorf("error\n%s\nwant\n%s", err, want)
			}
			var ye *yamlfile.Error
			if !errors.Is(err, ErrConfig) || !errors.As(err, &ye) {
				t.Errorf("%v is not an ErrConfig with a *yamlfile.Error", err)
			}
		})
	}
}
