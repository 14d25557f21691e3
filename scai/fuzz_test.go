package scai_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/google/go-cmp/cmp"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
)

// seedEnvelopes returns real signed envelopes, one per purpose.
func seedEnvelopes(f *testing.F) [][]byte {
	k := seededKey(f, "fuzz")
	var out [][]byte
	for _, p := range []attest.Purpose{attest.PurposeLaunch, attest.PurposeAttest, attest.PurposeDispatch, attest.PurposeComplete} {
		a := newAttestation(f, p, k.Public())
		if p == attest.PurposeComplete {
			a.Producer.Version, a.Producer.URI = "", ""
		}
		out = append(out, signed(f, k, a))
	}
	small := newAttestation(f, attest.PurposeLaunch, k.Public())
	small.Evidence = []*attest.Evidence{{Backend: "tpm", Parts: []attest.Part{{Name: "tpm/pcrs", Data: []byte("{}")}}}}
	small.Producer, small.Time = scai.Producer{Name: "attestd"}, time.Time{}
	return append(out, signed(f, k, small))
}

var sentinels = []error{
	scai.ErrEnvelope, scai.ErrPayloadType, scai.ErrStatement, scai.ErrPredicateType,
	scai.ErrSubject, scai.ErrEnvKey, scai.ErrBinding, scai.ErrSignature,
}

func checkSentinel(t *testing.T, err error) {
	t.Helper()
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return
		}
	}
	t.Fatalf("error wraps no sentinel: %v", err)
}

// checkOpened opens env and, if that works, checks that the statement is the
// one NewStatement builds from the attestation (the format is canonical).
func checkOpened(t *testing.T, env *dsse.Envelope) {
	t.Helper()
	o, err := scai.Open(env)
	if err != nil {
		checkSentinel(t, err)
		return
	}
	st, err := scai.NewStatement(o.Attestation)
	if err != nil {
		t.Fatalf("opened attestation does not build: %v", err)
	}
	// proto.Equal is the comparison; the diff is only made for a failure
	// (it costs more than opening the envelope).
	if !proto.Equal(st, o.Statement()) {
		t.Fatalf("opened statement is not canonical (-rebuilt +opened):\n%s", cmp.Diff(st, o.Statement(), protocmp.Transform()))
	}
	// The published bindings read the same statement from the payload.
	var pst ita.Statement
	if err := protojson.Unmarshal(o.Payload, &pst); err != nil {
		t.Fatalf("Open accepted a payload protojson refuses: %v", err)
	}
	if !proto.Equal(st, &pst) {
		t.Fatalf("protojson reads another statement (-rebuilt +protojson):\n%s", cmp.Diff(st, &pst, protocmp.Transform()))
	}
	// So does any JSON reader: no aliases, no extra keys, no nulls.
	again, err := scai.Encode(o.Attestation)
	if err != nil {
		t.Fatalf("opened attestation does not encode: %v", err)
	}
	var got, want any
	if err := json.Unmarshal(o.Payload, &got); err != nil {
		t.Fatalf("Open accepted a payload encoding/json refuses: %v", err)
	}
	if err := json.Unmarshal(again, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("payload reads differently from its canonical encoding (-canonical +payload):\n%s", cmp.Diff(want, got))
	}
	checkVerify(t, env, o.Attestation.EnvKey)
}

func FuzzParseBundle(f *testing.F) {
	envs := seedEnvelopes(f)
	for _, e := range envs {
		f.Add(e)
	}
	f.Add(bytes.Join(envs, []byte("\n")))
	f.Add([]byte("\n" + string(envs[0]) + "\r\n\n" + string(envs[1]) + "\n"))
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"AA=="}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := scai.ParseBundle(b)
		if err != nil {
			checkSentinel(t, err)
			return
		}
		if len(got) == 0 {
			t.Fatal("no envelopes and no error")
		}
		for _, env := range got {
			if env.PayloadType != scai.PayloadType || len(env.Signatures) == 0 {
				t.Fatalf("ParseBundle accepted %+v", env)
			}
			checkOpened(t, env)
		}
	})
}

func FuzzOpen(f *testing.F) {
	var sigs []dsse.Signature
	for _, e := range seedEnvelopes(f) {
		env, err := scai.ParseEnvelope(e)
		if err != nil {
			f.Fatal(err)
		}
		p, err := env.DecodeB64Payload()
		if err != nil {
			f.Fatal(err)
		}
		sigs = env.Signatures
		f.Add(p)
	}
	// Odd descriptors (annotations with numbers, nesting, escapes) and
	// protojson's layout.
	for _, tc := range encodeCases(f) {
		if strings.HasPrefix(tc.name, "realistic") {
			continue
		}
		p, err := scai.Encode(tc.a)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p)
		if tc.name == "odd descriptors" || tc.name == "batch" {
			st, err := scai.NewStatement(tc.a)
			if err != nil {
				f.Fatal(err)
			}
			p, err := protojson.MarshalOptions{Multiline: true}.Marshal(st)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(p)
		}
	}
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		env := &dsse.Envelope{
			PayloadType: scai.PayloadType,
			Payload:     base64.StdEncoding.EncodeToString(payload),
			Signatures:  sigs,
		}
		checkOpened(t, env)
	})
}
