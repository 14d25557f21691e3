package verify

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
)

func testReference() *ReferenceValues {
	h := strings.Repeat("ab", 32)
	return &ReferenceValues{
		Bank:     "sha256",
		Agent:    AgentReference{Register: "PCR13", Launch: h, Events: []ReferenceEvent{{Type: "separator", Data: json.RawMessage(`{"phase":"launch"}`)}}},
		RootHash: h,
		PCRs:     map[string]string{"4": h, "11": h},
	}
}

func TestReferenceSignOpen(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	st, err := NewReferenceStatement([]ReferenceSubject{{Name: "uki.efi", SHA256: strings.Repeat("cd", 32)}}, testReference())
	if err != nil {
		t.Fatal(err)
	}
	env, err := SignReference(context.Background(), key, st)
	if err != nil {
		t.Fatal(err)
	}
	rv, err := OpenReference(env, []crypto.PublicKey{other.Public(), key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if rv.PCRs["4"] != testReference().PCRs["4"] || rv.Agent.Launch != testReference().Agent.Launch {
		t.Errorf("opened %+v", rv)
	}
	if _, err := OpenReference(env, []crypto.PublicKey{other.Public()}); err == nil {
		t.Error("a statement signed by another key was accepted")
	}
	if _, err := OpenReference(env, nil); err == nil {
		t.Error("no keys: accepted")
	}
	// A validly signed statement of another kind is refused.
	bad := strings.Replace(string(st), ReferencePredicateType, "https://example.com/other", 1)
	benv, _ := SignReference(context.Background(), key, []byte(bad))
	if _, err := OpenReference(benv, []crypto.PublicKey{key.Public()}); err == nil {
		t.Error("another predicate type was accepted")
	}
	unknown := strings.Replace(string(st), `"bank":"sha256"`, `"bank":"sha256","extra":1`, 1)
	uenv, _ := SignReference(context.Background(), key, []byte(unknown))
	if _, err := OpenReference(uenv, []crypto.PublicKey{key.Public()}); err == nil {
		t.Error("an unknown predicate field was accepted")
	}
}

func TestReferenceValidate(t *testing.T) {
	for name, mut := range map[string]func(*ReferenceValues){
		"bank":        func(r *ReferenceValues) { r.Bank = "sha1" },
		"launch":      func(r *ReferenceValues) { r.Agent.Launch = "AB" },
		"register":    func(r *ReferenceValues) { r.Agent.Register = "PCR" },
		"pcr index":   func(r *ReferenceValues) { r.PCRs["04"] = r.PCRs["4"] },
		"pcr value":   func(r *ReferenceValues) { r.PCRs["4"] = "zz" },
		"roothash":    func(r *ReferenceValues) { r.RootHash = "XYZ" },
		"pcr too big": func(r *ReferenceValues) { r.PCRs["24"] = r.PCRs["4"] },
	} {
		rv := testReference()
		mut(rv)
		if _, err := NewReferenceStatement(nil, rv); err == nil {
			t.Errorf("%s: invalid reference values accepted", name)
		}
	}
}
