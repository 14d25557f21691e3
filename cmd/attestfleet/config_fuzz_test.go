package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseConfig: any config file is refused as a config error (with the
// files it names present: a policy and a key) or gives a config whose
// listen address, store and result options are set.
func FuzzParseConfig(f *testing.F) {
	dir, config := setup(f, "nonce_lifetime: 2m\nlimits:\n  max_bundle: 1048576\nmetrics: 127.0.0.1:0\n")
	good, err := os.ReadFile(config)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("policy: policy.yaml\nresults:\n  key: result-key.pem\nstore:\n  postgres: \"host=/run/postgresql\"\n"))
	f.Add([]byte("listen: [1]\n"))
	f.Add([]byte("tls:\n  cert: x\n"))
	path := filepath.Join(dir, "fuzz.yaml")
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := parseConfig(path, raw)
		if err != nil {
			if !errors.Is(err, errConfig) {
				t.Fatalf("not a config error: %v", err)
			}
			return
		}
		if c.listen == "" || (c.sqlite == "") == (c.postgres == "") || c.service.Signer == nil || c.service.Results.PolicyURI == "" {
			t.Fatalf("accepted an incomplete config: %+v", c)
		}
	})
}
