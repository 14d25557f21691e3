package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
)

func TestImageProvenance(t *testing.T) {
	dir := t.TempDir()
	disk, uki := filepath.Join(dir, "disk.img"), filepath.Join(dir, "uki.efi")
	os.WriteFile(disk, []byte("disk"), 0o644)
	os.WriteFile(uki, []byte("uki"), 0o644)
	commit := "3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b"
	newFlags := func(args ...string) (*provenanceFlags, error) {
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		pf := newProvenanceFlags(fs)
		return pf, fs.Parse(args)
	}
	pf, err := newFlags("--subject", disk, "--subject", uki, "--param", "suite=bookworm", "--param", "cmdline=a=b c",
		"--dep", "git+https://github.com/attestd/attestd@"+commit+"=gitCommit:"+commit,
		"--started-on", "2026-11-24T11:00:00Z", "--invocation-id", "bake-1")
	if err != nil {
		t.Fatal(err)
	}
	finished := time.Date(2026, 11, 24, 11, 5, 0, 0, time.UTC)
	b, err := pf.statement(uki, "", finished)
	if err != nil {
		t.Fatal(err)
	}
	var st ita.Statement
	if err := protojson.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if err := st.Validate(); err != nil {
		t.Fatal(err)
	}
	if st.GetPredicateType() != slsaProvenanceType || len(st.GetSubject()) != 2 {
		t.Fatalf("statement %s", b)
	}
	sum := sha256.Sum256([]byte("disk"))
	if s := st.GetSubject()[0]; s.GetName() != "disk.img" || s.GetDigest()["sha256"] != hex.EncodeToString(sum[:]) {
		t.Errorf("subject %v", s)
	}
	pj, _ := protojson.Marshal(st.GetPredicate())
	var p slsa.Provenance
	if err := protojson.Unmarshal(pj, &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	bd, rd := p.GetBuildDefinition(), p.GetRunDetails()
	if bd.GetBuildType() != imageBuildType || bd.GetExternalParameters().AsMap()["cmdline"] != "a=b c" {
		t.Errorf("build definition %v", bd)
	}
	if d := bd.GetResolvedDependencies(); len(d) != 1 || d[0].GetUri() != "git+https://github.com/attestd/attestd@"+commit || d[0].GetDigest()["gitCommit"] != commit {
		t.Errorf("dependencies %v", d)
	}
	if rd.GetBuilder().GetId() != defaultBuilderID || !rd.GetMetadata().GetFinishedOn().AsTime().Equal(finished) ||
		rd.GetMetadata().GetStartedOn().AsTime().Hour() != 11 || rd.GetMetadata().GetInvocationId() != "bake-1" {
		t.Errorf("run details %v", rd)
	}

	for name, args := range map[string][]string{
		"param without =":  {"--param", "x"},
		"dep without alg":  {"--dep", "file:x=abc"},
		"dep without uri":  {"--dep", "=sha256:ab"},
		"bad started-on":   {"--started-on", "yesterday"},
		"missing subject":  {"--subject", filepath.Join(dir, "nope")},
		"empty param name": {"--param", "=v"},
	} {
		pf, err := newFlags(args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pf.statement(uki, "", finished); !errors.Is(err, errUsage) {
			t.Errorf("%s: err %v, want a usage error", name, err)
		}
	}
}
