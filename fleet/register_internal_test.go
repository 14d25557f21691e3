package fleet

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecodePendingAK: the registration record read back from the store
// never panics, and what it accepts is complete and re-encodes to a record
// it accepts again.
func FuzzDecodePendingAK(f *testing.F) {
	good, _ := json.Marshal(pendingAK{SecretSHA256: bytes.Repeat([]byte{1}, 32), AK: []byte("der"), EKCertSHA256: strings.Repeat("a", 64)})
	f.Add(good)
	f.Add([]byte(`{"secretSha256":"AA==","ak":"","ekCertSha256":""}`))
	f.Add([]byte(`{}`))
	f.Add(append(good, good...))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodePendingAK(data)
		if err != nil {
			return
		}
		if len(p.SecretSHA256) != 32 || len(p.AK) == 0 || p.EKCertSHA256 == "" {
			t.Fatalf("accepted an incomplete record: %+v", p)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := decodePendingAK(again); err != nil {
			t.Fatalf("re-encoded record refused: %v", err)
		}
	})
}

func TestDecodePendingAK(t *testing.T) {
	for name, data := range map[string]string{
		"empty":         ``,
		"unknown field": `{"secretSha256":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","ak":"ZGVy","ekCertSha256":"aa","x":1}`,
		"short secret":  `{"secretSha256":"AQ==","ak":"ZGVy","ekCertSha256":"aa"}`,
		"trailing":      `{"secretSha256":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=","ak":"ZGVy","ekCertSha256":"aa"} {}`,
	} {
		if _, err := decodePendingAK([]byte(data)); err == nil {
			t.Errorf("%s: accepted %s", name, data)
		}
	}
}
