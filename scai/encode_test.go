package scai_test

import (
	"bytes"
	"context"
	"crypto"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/google/go-cmp/cmp"
	scaipb "github.com/in-toto/attestation/go/predicates/scai/v0"
	ita "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

// encodeCases are attestations of every purpose and shape.
func encodeCases(t testing.TB) []struct {
	name   string
	signer crypto.Signer
	a      *scai.Attestation
} {
	ec := seededKey(t, "encode")
	rk := rsaKey(t)
	kd, _ := attest.KeyDigest(ec.Public())
	rebind := func(a *scai.Attestation) *scai.Attestation {
		b, err := scai.ExpectedBinding(a)
		if err != nil {
			t.Fatal(err)
		}
		a.Binding = b
		return a
	}
	batch := newAttestation(t, attest.PurposeAttest, ec.Public())
	root, _ := batchProofs(t, kd, 3)
	batch.Nonce, batch.Batch = nil, &scai.Batch{Root: root, Size: 3}
	minimal := newAttestation(t, attest.PurposeLaunch, ec.Public())
	minimal.Evidence, minimal.Producer, minimal.Time = nil, scai.Producer{Name: "attestd"}, time.Time{}
	odd := newAttestation(t, attest.PurposeDispatch, ec.Public())
	ann, err := structpb.NewStruct(map[string]any{
		"html": "<a href='x'>&amp;</a>", "unicode": "é 日本 😀 \u2028", "ctl": "\x00\t\n\"\\",
		"n": []any{1, -0.5, 1e21, 1e-7, 123456789, nil, true, map[string]any{}}, "": map[string]any{"b": 1, "a": []any{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	odd.Build.Request = append(odd.Build.Request,
		&ita.ResourceDescriptor{Name: "odd <&> \u2029", Uri: "https://x/?a=1&b=<2>", DownloadLocation: "https://dl", MediaType: "text/plain",
			Content: []byte{0, 0xff, 0xfe}, Digest: map[string]string{"sha256": strings.Repeat("0", 64), "sha1": strings.Repeat("1", 40)}, Annotations: ann},
		&ita.ResourceDescriptor{Uri: "only-uri", Annotations: &structpb.Struct{}},
	)
	complete := newAttestation(t, attest.PurposeComplete, ec.Public())
	complete.Build.Outputs = append(complete.Build.Outputs, &ita.ResourceDescriptor{Name: "sbom", MediaType: "application/spdx+json",
		Digest: map[string]string{"sha512": strings.Repeat("ab", 64)}, Annotations: ann})
	complete.Build.Inputs = nil
	return []struct {
		name   string
		signer crypto.Signer
		a      *scai.Attestation
	}{
		{"launch", ec, newAttestation(t, attest.PurposeLaunch, ec.Public())},
		{"attest", ec, newAttestation(t, attest.PurposeAttest, ec.Public())},
		{"dispatch", ec, newAttestation(t, attest.PurposeDispatch, ec.Public())},
		{"complete", ec, newAttestation(t, attest.PurposeComplete, ec.Public())},
		{"rsa", rk, newAttestation(t, attest.PurposeAttest, rk.Public())},
		{"batch", ec, rebind(batch)},
		{"minimal", ec, minimal},
		{"odd descriptors", ec, rebind(odd)},
		{"complete without inputs", ec, rebind(complete)},
		{"realistic dispatch", ec, benchAttestation(t, attest.PurposeDispatch, ec)},
		{"realistic complete", ec, benchAttestation(t, attest.PurposeComplete, ec)},
	}
}

// TestEncode checks that Encode's payload is what the published bindings
// read as the statement NewStatement builds, that Sign ships the same
// bytes, and that the payload is in canonical layout.
func TestEncode(t *testing.T) {
	for _, tc := range encodeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			payload, err := scai.Encode(tc.a)
			if err != nil {
				t.Fatal(err)
			}
			want, err := scai.NewStatement(tc.a)
			if err != nil {
				t.Fatal(err)
			}
			// The bindings decode it, strictly, and it validates.
			var st ita.Statement
			if err := protojson.Unmarshal(payload, &st); err != nil {
				t.Fatalf("protojson: %v", err)
			}
			if err := st.Validate(); err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, &st, protocmp.Transform()); d != "" {
				t.Errorf("decoded payload is not NewStatement's statement (-want +got):\n%s", d)
			}
			pb, err := protojson.Marshal(st.GetPredicate())
			if err != nil {
				t.Fatal(err)
			}
			var report scaipb.AttributeReport
			if err := protojson.Unmarshal(pb, &report); err != nil {
				t.Fatalf("predicate is not a SCAI report: %v", err)
			}
			if err := report.Validate(); err != nil {
				t.Fatal(err)
			}
			// The payload is canonical: keys sorted, no white space, strings
			// as encoding/json writes them without HTML escaping.
			if c := reencode(t, payload); !bytes.Equal(c, payload) {
				t.Errorf("payload is not canonical:\n got %s\nwant %s", payload, c)
			}
			// Sign(NewStatement) ships the same bytes.
			env := signed(t, tc.signer, tc.a)
			o, e, err := openVerified(env)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(o.Payload, payload) {
				t.Error("Sign(NewStatement(a)) signs other bytes than Encode(a)")
			}
			// Encode + SignPayload opens to the same attestation.
			b, err := scai.SignPayload(context.Background(), tc.signer, payload)
			if err != nil {
				t.Fatal(err)
			}
			o2, _, err := openVerified(b)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tc.a, o2.Attestation, cmpAttestation); d != "" {
				t.Errorf("attestation changed (-want +got):\n%s", d)
			}
			_ = e
		})
	}
}

// reencode is payload decoded and re-encoded by encoding/json: sorted keys,
// no white space, numbers as written, no HTML escaping.
func reencode(t *testing.T, payload []byte) []byte {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// TestGoldenPayload pins the exact payload bytes of the golden attestation
// (TestGolden pins its content, whatever the layout).
func TestGoldenPayload(t *testing.T) {
	k := seededKey(t, "attestd golden key")
	got, err := scai.Encode(newAttestation(t, attest.PurposeAttest, k.Public()))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "attest-payload.golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("payload differs from %s:\n got %s\nwant %s", path, got, want)
	}
}

// TestOpenProtojsonPayload: statements marshalled by protojson (the layout
// attestd signed before it wrote the JSON itself, with protojson's unstable
// white space) still open.
func TestOpenProtojsonPayload(t *testing.T) {
	for _, tc := range encodeCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			st, err := scai.NewStatement(tc.a)
			if err != nil {
				t.Fatal(err)
			}
			for _, opts := range []protojson.MarshalOptions{{}, {Multiline: true, Indent: "\t"}} {
				p, err := opts.Marshal(st)
				if err != nil {
					t.Fatal(err)
				}
				b, err := scai.SignPayload(context.Background(), tc.signer, p)
				if err != nil {
					t.Fatal(err)
				}
				o, _, err := openVerified(b)
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				if d := cmp.Diff(tc.a, o.Attestation, cmpAttestation); d != "" {
					t.Errorf("attestation changed (-want +got):\n%s", d)
				}
				if !proto.Equal(o.Statement(), st) {
					t.Error("opened statement differs")
				}
			}
		})
	}
}

func TestNewStatementCopies(t *testing.T) {
	k := seededKey(t, "copies")
	a := newAttestation(t, attest.PurposeComplete, k.Public())
	ann, _ := structpb.NewStruct(map[string]any{"k": "v"})
	a.Build.Outputs[0].Annotations = ann
	a.Binding, _ = scai.ExpectedBinding(a)
	st, err := scai.NewStatement(a)
	if err != nil {
		t.Fatal(err)
	}
	st.Subject[0].Digest["sha256"] = "changed"
	st.Subject[0].Annotations.Fields["k"] = structpb.NewStringValue("changed")
	if a.Build.Outputs[0].Digest["sha256"] == "changed" || a.Build.Outputs[0].Annotations.Fields["k"].GetStringValue() == "changed" {
		t.Error("the statement's subjects share the caller's descriptors")
	}
}
