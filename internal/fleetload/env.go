package fleetload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/agent"
	"github.com/attestd/attestd/attest"
)

// What every environment builds: one request, one input, one output, and
// the provenance it signs (small: the bundle sizes in the report are those
// of a build with one input and one output).
var (
	buildRequest = []*ita.ResourceDescriptor{{Name: "source", Uri: "git+https://example.com/app", Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)}}}
	buildInputs  = []*ita.ResourceDescriptor{{Name: "dep.tgz", Digest: map[string]string{"sha256": strings.Repeat("2", 64)}}}
	buildOutputs = []*ita.ResourceDescriptor{{Name: "app.bin", Digest: map[string]string{"sha256": strings.Repeat("3", 64)}}}
	provenance   = []byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app.bin","digest":{"sha256":"` + strings.Repeat("3", 64) +
		`"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/t"}}}`)
)

// env is one build environment: an attestd agent, in this process, on one
// evidence backend, launched (measured, its launch attestation signed).
type env struct {
	*agent.Agent
	backend attest.Backend
}

// launch starts an agent on b with its files in dir and launches it.
func launch(ctx context.Context, b attest.Backend, dir string) (*env, error) {
	bin, exe, img := filepath.Join(dir, "attestd"), filepath.Join(dir, "runner"), filepath.Join(dir, "image.json")
	for p, c := range map[string]string{bin: "daemon bytes", exe: "runner bytes", img: `{"name":"fleetload"}`} {
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			return nil, err
		}
	}
	cfg, err := agent.ParseConfig(filepath.Join(dir, "config.yaml"), []byte("image_metadata: "+img+"\nexecutors: ["+exe+"]\n"))
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	a, err := agent.New(agent.Options{Config: cfg, Backend: b, RuntimeDir: filepath.Join(dir, "run"), BinaryPath: bin,
		Cmdline: "console=ttyS0 roothash=" + strings.Repeat("ab", 32), FirmwareLogPath: "/nonexistent",
		Version: "fleetload", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := a.Launch(ctx); err != nil {
		a.Close()
		return nil, fmt.Errorf("launch: %w", err)
	}
	return &env{Agent: a, backend: b}, nil
}

func (e *env) close() {
	e.Agent.Close()
	e.backend.Close()
}

// attest answers an admission challenge and returns the bundle.
func (e *env) attest(ctx context.Context, nonce []byte) ([]byte, error) {
	if _, err := e.Attest(ctx, nonce); err != nil {
		return nil, fmt.Errorf("attestd Attest: %w", err)
	}
	return e.Bundle().Encode(), nil
}

// run binds build with the dispatch nonce, completes it and signs its
// provenance, and returns the bundle at dispatch and at completion.
func (e *env) run(ctx context.Context, build string, nonce []byte) (dispatch, complete []byte, err error) {
	if _, err := e.BindBuild(ctx, build, buildRequest, nonce); err != nil {
		return nil, nil, fmt.Errorf("attestd BindBuild: %w", err)
	}
	dispatch = e.Bundle().Encode()
	if _, err := e.Complete(ctx, build, buildInputs, buildOutputs, nil); err != nil {
		return nil, nil, fmt.Errorf("attestd Complete: %w", err)
	}
	if _, err := e.SignStatement(ctx, build, provenance); err != nil {
		return nil, nil, fmt.Errorf("attestd SignStatement: %w", err)
	}
	return dispatch, e.Bundle().Encode(), nil
}
