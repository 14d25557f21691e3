package main

import (
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	slsa "github.com/in-toto/attestation/go/predicates/provenance/v1"
	ita "github.com/in-toto/attestation/go/v1"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/attestd/attestd/measure"
)

// The SLSA provenance v1 statement of a baked image (SLSA BuildEnv L1: the
// build image has signed provenance), written by `attestctl reference
// --provenance-out` and signed with the bake key. docs/reference-values.md.

const (
	slsaProvenanceType = "https://slsa.dev/provenance/v1"
	// imageBuildType names how images/bake.sh builds an image.
	imageBuildType   = "https://attestd.dev/image-bake/v1"
	defaultBuilderID = "https://github.com/attestd/attestd/images/bake.sh"
)

// provenanceFlags are reference's flags for the image provenance.
type provenanceFlags struct {
	out       *string
	subjects  multiFlag
	params    multiFlag
	deps      multiFlag
	builderID *string
	started   *string
	invocID   *string
}

func newProvenanceFlags(fs *pflag.FlagSet) *provenanceFlags {
	pf := &provenanceFlags{}
	pf.out = fs.String("provenance-out", "", "also write a signed SLSA provenance v1 statement for the image to `FILE`")
	fs.Var(&pf.subjects, "subject", "an artifact `FILE` of the image the provenance is about (repeatable; default the --uki)")
	fs.Var(&pf.params, "param", "`KEY=VALUE`: an external parameter of the bake (repeatable)")
	fs.Var(&pf.deps, "dep", "`URI=ALG:HEX`: a resolved dependency of the bake, e.g. git+https://…@COMMIT=gitCommit:COMMIT (repeatable)")
	pf.builderID = fs.String("builder-id", defaultBuilderID, "the provenance's builder `ID`")
	pf.started = fs.String("started-on", "", "`TIME` the bake started (RFC 3339)")
	pf.invocID = fs.String("invocation-id", "", "an `ID` of this bake run")
	return pf
}

// statement builds the provenance statement (JSON) for the bake; finished is
// when the bake finished. ukiPath is the default subject; cmdline, the UKI's
// embedded kernel command line, is the "cmdline" parameter unless --param
// gives one (SLSA provenance needs at least one external parameter).
func (pf *provenanceFlags) statement(ukiPath, cmdline string, finished time.Time) ([]byte, error) {
	subjects := pf.subjects
	if len(subjects) == 0 {
		subjects = multiFlag{ukiPath}
	}
	st := &ita.Statement{Type: ita.StatementTypeUri, PredicateType: slsaProvenanceType}
	for _, f := range subjects {
		sum, err := measure.FileSHA256(f)
		if err != nil {
			return nil, fmt.Errorf("%w: --subject: %v", errUsage, err)
		}
		st.Subject = append(st.Subject, &ita.ResourceDescriptor{Name: filepath.Base(f), Digest: map[string]string{"sha256": hex.EncodeToString(sum[:])}})
	}
	params := map[string]any{}
	for _, p := range pf.params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: --param %q: want KEY=VALUE", errUsage, p)
		}
		params[k] = v
	}
	if _, ok := params["cmdline"]; !ok && cmdline != "" {
		params["cmdline"] = cmdline
	}
	ext, err := structpb.NewStruct(params)
	if err != nil {
		return nil, err
	}
	bd := &slsa.BuildDefinition{BuildType: imageBuildType, ExternalParameters: ext}
	sort.Strings(pf.deps)
	for _, d := range pf.deps {
		i := strings.LastIndex(d, "=")
		alg, hx, ok := strings.Cut(d[i+1:], ":")
		if i <= 0 || !ok || alg == "" || hx == "" {
			return nil, fmt.Errorf("%w: --dep %q: want URI=ALG:HEX", errUsage, d)
		}
		bd.ResolvedDependencies = append(bd.ResolvedDependencies, &ita.ResourceDescriptor{Uri: d[:i], Digest: map[string]string{alg: hx}})
	}
	md := &slsa.BuildMetadata{InvocationId: *pf.invocID, FinishedOn: timestamppb.New(finished.UTC())}
	if *pf.started != "" {
		t, err := time.Parse(time.RFC3339, *pf.started)
		if err != nil {
			return nil, fmt.Errorf("%w: --started-on: %v", errUsage, err)
		}
		md.StartedOn = timestamppb.New(t.UTC())
	}
	pred := &slsa.Provenance{
		BuildDefinition: bd,
		RunDetails:      &slsa.RunDetails{Builder: &slsa.Builder{Id: *pf.builderID}, Metadata: md},
	}
	if err := pred.Validate(); err != nil {
		return nil, fmt.Errorf("image provenance: %w", err)
	}
	pj, err := protojson.Marshal(pred)
	if err != nil {
		return nil, err
	}
	if st.Predicate, err = structFromJSON(pj); err != nil {
		return nil, err
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("image provenance: %w", err)
	}
	return protojson.Marshal(st)
}

func structFromJSON(b []byte) (*structpb.Struct, error) {
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(b, s); err != nil {
		return nil, err
	}
	return s, nil
}
