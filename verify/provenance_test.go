package verify_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

var (
	provDisk     = []byte("disk image bytes")
	provUKI      = []byte("unified kernel image bytes")
	provCommit   = "3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b"
	provFinished = time.Date(2026, 11, 24, 11, 5, 0, 0, time.UTC)
)

// provKey returns a fixed P-256 test key, so that envelopes a fuzzer saves
// still verify in a later run.
func provKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("attestd image provenance test key " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// provStatement is an image provenance statement as `attestctl reference
// --provenance-out` makes it (built with the same bindings), as a JSON
// object that edit may change.
func provStatement(t testing.TB, edit func(st map[string]any)) []byte {
	t.Helper()
	sum := func(b []byte) map[string]string {
		s := sha256.Sum256(b)
		return map[string]string{"sha256": hex.EncodeToString(s[:])}
	}
	ext, err := structpb.NewStruct(map[string]any{"suite": "bookworm", "cmdline": "console=ttyS0 roothash=ab", "version": "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	pred := &slsa.Provenance{
		BuildDefinition: &slsa.BuildDefinition{
			BuildType:          "https://attestd.dev/image-bake/v1",
			ExternalParameters: ext,
			ResolvedDependencies: []*ita.ResourceDescriptor{
				{Uri: "git+https://github.com/attestd/attestd@" + provCommit, Digest: map[string]string{"gitCommit": provCommit}},
			},
		},
		RunDetails: &slsa.RunDetails{
			Builder:  &slsa.Builder{Id: "https://github.com/attestd/attestd/images/bake.sh"},
			Metadata: &slsa.BuildMetadata{InvocationId: "bake-1", FinishedOn: timestamppb.New(provFinished)},
		},
	}
	pj, err := protojson.Marshal(pred)
	if err != nil {
		t.Fatal(err)
	}
	ps := &structpb.Struct{}
	if err := protojson.Unmarshal(pj, ps); err != nil {
		t.Fatal(err)
	}
	st := &ita.Statement{
		Type: ita.StatementTypeUri,
		Subject: []*ita.ResourceDescriptor{
			{Name: "disk.img", Digest: sum(provDisk)},
			{Name: "uki.efi", Digest: sum(provUKI)},
		},
		PredicateType: verify.SLSAProvenancePredicateType,
		Predicate:     ps,
	}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	b, err := protojson.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return b
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	return b
}

func signProv(t testing.TB, key crypto.Signer, payload []byte) []byte {
	t.Helper()
	env, err := scai.SignPayload(context.Background(), key, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// envelopeWithType signs payload under another payload type, by hand.
func envelopeWithType(t testing.TB, key *ecdsa.PrivateKey, payloadType string, payload []byte) []byte {
	t.Helper()
	pae := fmt.Sprintf("DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(payload), payload)
	d := sha256.Sum256([]byte(pae))
	sig, err := ecdsa.SignASN1(nil, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"payloadType": payloadType,
		"payload":     base64.StdEncoding.EncodeToString(payload),
		"signatures":  []map[string]string{{"sig": base64.StdEncoding.EncodeToString(sig)}},
	})
	return b
}

func predicate(st map[string]any) map[string]any { return st["predicate"].(map[string]any) }

func TestOpenImageProvenance(t *testing.T) {
	key, other := provKey(t, "bake"), provKey(t, "other")
	keys := []crypto.PublicKey{key.Public()}
	good := signProv(t, key, provStatement(t, nil))

	p, err := verify.OpenImageProvenance(good, keys)
	if err != nil {
		t.Fatal(err)
	}
	diskSum, ukiSum := sha256.Sum256(provDisk), sha256.Sum256(provUKI)
	want := &verify.ImageProvenance{
		Subjects: []verify.ProvenanceDescriptor{
			{Name: "disk.img", Digest: map[string]string{"sha256": hex.EncodeToString(diskSum[:])}},
			{Name: "uki.efi", Digest: map[string]string{"sha256": hex.EncodeToString(ukiSum[:])}},
		},
		BuilderID:          "https://github.com/attestd/attestd/images/bake.sh",
		BuildType:          "https://attestd.dev/image-bake/v1",
		ExternalParameters: map[string]any{"suite": "bookworm", "cmdline": "console=ttyS0 roothash=ab", "version": "v1.2.3"},
		ResolvedDependencies: []verify.ProvenanceDescriptor{
			{URI: "git+https://github.com/attestd/attestd@" + provCommit, Digest: map[string]string{"gitCommit": provCommit}},
		},
		InvocationID: "bake-1",
		FinishedOn:   provFinished,
	}
	if d := cmp.Diff(want, p); d != "" {
		t.Errorf("provenance (-want +got):\n%s", d)
	}
	if err := p.CheckArtifact("disk.img", diskSum); err != nil {
		t.Error(err)
	}
	if err := p.CheckArtifact("uki.efi", ukiSum); err != nil {
		t.Error(err)
	}
	// The right key among several.
	if _, err := verify.OpenImageProvenance(good, []crypto.PublicKey{other.Public(), key.Public()}); err != nil {
		t.Errorf("second of two keys: %v", err)
	}

	var envMap map[string]any
	if err := json.Unmarshal(good, &envMap); err != nil {
		t.Fatal(err)
	}
	tampered := func() []byte {
		payload, _ := base64.StdEncoding.DecodeString(envMap["payload"].(string))
		payload = []byte(strings.Replace(string(payload), "bookworm", "trixie!!", 1))
		m := map[string]any{}
		for k, v := range envMap {
			m[k] = v
		}
		m["payload"] = base64.StdEncoding.EncodeToString(payload)
		b, _ := json.Marshal(m)
		return b
	}()
	signEdit := func(edit func(map[string]any)) []byte { return signProv(t, key, provStatement(t, edit)) }
	refStatement, err := verify.NewReferenceStatement([]verify.ReferenceSubject{{Name: "uki.efi", SHA256: strings.Repeat("ab", 32)}},
		&verify.ReferenceValues{Bank: "sha256", Agent: verify.AgentReference{Register: "PCR13", Launch: strings.Repeat("cd", 32)}})
	if err != nil {
		t.Fatal(err)
	}

	sig, stmt := verify.ErrProvenanceSignature, verify.ErrProvenanceStatement
	for _, tc := range []struct {
		name string
		raw  []byte
		keys []crypto.PublicKey
		want []error // every one must match
	}{
		{"wrong key", good, []crypto.PublicKey{other.Public()}, []error{sig, scai.ErrSignature}},
		{"no key", good, nil, []error{sig}},
		{"tampered payload", tampered, keys, []error{sig, scai.ErrSignature}},
		{"not an envelope", []byte(`{"hello": "world"}`), keys, []error{sig, scai.ErrEnvelope}},
		{"not JSON", []byte("\x00\xff"), keys, []error{sig, scai.ErrEnvelope}},
		{"empty", nil, keys, []error{sig, scai.ErrEnvelope}},
		{"too large", append(good, make([]byte, 1<<20)...), keys, []error{sig}},
		{"payload type", envelopeWithType(t, key, "text/plain", provStatement(t, nil)), keys, []error{sig, scai.ErrPayloadType}},
		{"wrong predicate type", signEdit(func(st map[string]any) { st["predicateType"] = "https://slsa.dev/provenance/v0.2" }), keys, []error{stmt, scai.ErrPredicateType}},
		{"reference values", signProv(t, key, refStatement), keys, []error{stmt, scai.ErrPredicateType}},
		{"payload not JSON", signProv(t, key, []byte("not json")), keys, []error{stmt}},
		{"legacy statement type", signEdit(func(st map[string]any) { st["_type"] = "https://in-toto.io/Statement/v0.1" }), keys, []error{stmt}},
		{"unknown statement field", signEdit(func(st map[string]any) { st["extra"] = 1 }), keys, []error{stmt}},
		{"unknown predicate field", signEdit(func(st map[string]any) { predicate(st)["extra"] = 1 }), keys, []error{stmt}},
		{"unknown builder field", signEdit(func(st map[string]any) {
			predicate(st)["runDetails"].(map[string]any)["builder"].(map[string]any)["extra"] = "x"
		}), keys, []error{stmt}},
		{"no builder ID", signEdit(func(st map[string]any) {
			predicate(st)["runDetails"].(map[string]any)["builder"] = map[string]any{"version": map[string]any{"a": "b"}}
		}), keys, []error{stmt, slsa.ErrBuilderIdRequired}},
		{"no external parameters", signEdit(func(st map[string]any) {
			delete(predicate(st)["buildDefinition"].(map[string]any), "externalParameters")
		}), keys, []error{stmt, slsa.ErrExternalParamsRequired}},
		{"bad timestamp", signEdit(func(st map[string]any) {
			predicate(st)["runDetails"].(map[string]any)["metadata"].(map[string]any)["finishedOn"] = "yesterday"
		}), keys, []error{stmt}},
		{"no subject", signEdit(func(st map[string]any) { st["subject"] = []any{} }), keys, []error{stmt, ita.ErrSubjectRequired}},
		{"short subject digest", signEdit(func(st map[string]any) {
			st["subject"] = []any{map[string]any{"name": "disk.img", "digest": map[string]any{"sha256": "abcd"}}}
		}), keys, []error{stmt, ita.ErrIncorrectDigestLength}},
		{"subject without sha256", signEdit(func(st map[string]any) {
			st["subject"] = []any{map[string]any{"name": "disk.img", "digest": map[string]any{"sha512": strings.Repeat("a", 128)}}}
		}), keys, []error{stmt}},
		{"subject without name", signEdit(func(st map[string]any) {
			st["subject"] = []any{map[string]any{"digest": map[string]any{"sha256": strings.Repeat("a", 64)}}}
		}), keys, []error{stmt}},
		{"duplicate subject", signEdit(func(st map[string]any) {
			st["subject"] = []any{st["subject"].([]any)[0], st["subject"].([]any)[0]}
		}), keys, []error{stmt}},
		{"duplicate JSON key", signProv(t, key, []byte(strings.Replace(string(provStatement(t, nil)), `{`, `{"predicateType":"x",`, 1))), keys, []error{stmt}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := verify.OpenImageProvenance(tc.raw, tc.keys)
			if err == nil {
				t.Fatalf("opened: %+v", p)
			}
			t.Log(err)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("err %v, want %v", err, w)
				}
			}
			if errors.Is(err, sig) == errors.Is(err, stmt) {
				t.Errorf("err %v: want exactly one of the two sentinels", err)
			}
		})
	}
}

func TestCheckArtifact(t *testing.T) {
	key := provKey(t, "bake")
	p, err := verify.OpenImageProvenance(signProv(t, key, provStatement(t, nil)), []crypto.PublicKey{key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	diskSum, otherSum := sha256.Sum256(provDisk), sha256.Sum256([]byte("another disk"))
	for _, tc := range []struct {
		name     string
		file     string
		sum      [32]byte
		want     error
		mismatch bool
		msg      string
	}{
		{name: "good", file: "disk.img", sum: diskSum},
		{name: "digest mismatch", file: "disk.img", sum: otherSum, mismatch: true,
			msg: fmt.Sprintf("disk.img: sha256 %x, provenance says %x", otherSum, diskSum)},
		{name: "digest of another subject", file: "uki.efi", sum: diskSum, mismatch: true},
		{name: "missing subject", file: "root.img", sum: diskSum, want: verify.ErrNoSubject,
			msg: `no subject named "root.img" (subjects: disk.img, uki.efi)`},
		{name: "path, not base name", file: "out/disk.img", sum: diskSum, want: verify.ErrNoSubject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := p.CheckArtifact(tc.file, tc.sum)
			var mm *verify.ArtifactMismatchError
			switch {
			case tc.want == nil && !tc.mismatch && err != nil:
				t.Fatal(err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("err %v, want %v", err, tc.want)
			case tc.mismatch && !errors.As(err, &mm):
				t.Fatalf("err %v, want an ArtifactMismatchError", err)
			case tc.mismatch && (mm.Name != tc.file || mm.SHA256 != tc.sum):
				t.Errorf("mismatch %+v", mm)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err, tc.msg)
			}
		})
	}
	// A hand-made ImageProvenance with a bad digest errors, not panics.
	bad := &verify.ImageProvenance{Subjects: []verify.ProvenanceDescriptor{{Name: "x", Digest: map[string]string{"sha256": "ab"}}}}
	if err := bad.CheckArtifact("x", diskSum); err == nil {
		t.Error("bad digest accepted")
	}
}

// checkOpened checks what OpenImageProvenance returned on any input.
func checkOpened(t *testing.T, p *verify.ImageProvenance, err error) {
	if err != nil {
		if p != nil {
			t.Fatalf("provenance and error %v", err)
		}
		if errors.Is(err, verify.ErrProvenanceSignature) == errors.Is(err, verify.ErrProvenanceStatement) {
			t.Fatalf("err %v: want exactly one of the two sentinels", err)
		}
		return
	}
	if len(p.Subjects) == 0 || p.BuilderID == "" || p.BuildType == "" || len(p.ExternalParameters) == 0 {
		t.Fatalf("opened an incomplete provenance: %+v", p)
	}
	for _, s := range p.Subjects {
		b, err := hex.DecodeString(s.Digest["sha256"])
		if err != nil || len(b) != 32 {
			t.Fatalf("subject %q digest %q", s.Name, s.Digest["sha256"])
		}
		if err := p.CheckArtifact(s.Name, [32]byte(b)); err != nil {
			t.Fatalf("own subject: %v", err)
		}
		var mm *verify.ArtifactMismatchError
		if [32]byte(b) != [32]byte{} && !errors.As(p.CheckArtifact(s.Name, [32]byte{}), &mm) {
			t.Fatalf("subject %q: a different digest is not a mismatch", s.Name)
		}
	}
	if _, err := json.Marshal(p); err != nil {
		t.Fatalf("marshal: %v", err)
	}
}

// FuzzOpenImageProvenance: whatever the bytes, opening never panics, fails
// with one of the two sentinels, and what opens is complete and checks its
// own subjects.
func FuzzOpenImageProvenance(f *testing.F) {
	key := provKey(f, "bake")
	keys := []crypto.PublicKey{key.Public()}
	good := signProv(f, key, provStatement(f, nil))
	f.Add(good)
	f.Add(signProv(f, key, provStatement(f, func(st map[string]any) { st["predicateType"] = "https://slsa.dev/provenance/v0.2" })))
	f.Add(signProv(f, key, provStatement(f, func(st map[string]any) { predicate(st)["extra"] = true })))
	f.Add(signProv(f, provKey(f, "other"), provStatement(f, nil)))
	f.Add(envelopeWithType(f, key, "text/plain", provStatement(f, nil)))
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := verify.OpenImageProvenance(raw, keys)
		checkOpened(t, p, err)
	})
}

// FuzzImageProvenanceStatement: the statement decoder behind the signature,
// reached by signing every fuzzed payload with the bake key.
func FuzzImageProvenanceStatement(f *testing.F) {
	key := provKey(f, "bake")
	keys := []crypto.PublicKey{key.Public()}
	f.Add(provStatement(f, nil))
	f.Add(provStatement(f, func(st map[string]any) { st["_type"] = "https://in-toto.io/Statement/v0.1" }))
	f.Add(provStatement(f, func(st map[string]any) { st["subject"] = []any{st["subject"].([]any)[0], st["subject"].([]any)[0]} }))
	f.Add(provStatement(f, func(st map[string]any) { delete(predicate(st), "runDetails") }))
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) == 0 {
			return // DSSE has no empty payloads
		}
		p, err := verify.OpenImageProvenance(signProv(t, key, payload), keys)
		if errors.Is(err, verify.ErrProvenanceSignature) && len(payload) < 1<<19 {
			t.Fatalf("own signature refused: %v", err)
		}
		checkOpened(t, p, err)
	})
}
