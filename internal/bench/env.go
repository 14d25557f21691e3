package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/scai"
)

// tpmEnv is one build environment: a fresh swtpm, the proxy in front of it,
// attestd on it with its runtime directory under runtimeBase, and a client.
type tpmEnv struct {
	tpm    *swtpm
	proxy  *tpmProxy
	daemon *daemon
	c      *apiv1.Client
	dir    string // work dir
	run    string // runtime dir
}

// newTPMEnv starts a TPM and its proxy; start (or startDaemon) runs
// attestd on it.
func (h *harness) newTPMEnv(runtimeBase string) (*tpmEnv, error) {
	e := &tpmEnv{}
	var err error
	if e.dir, err = os.MkdirTemp(h.tmp, "env"); err != nil {
		return nil, err
	}
	if e.run, err = os.MkdirTemp(runtimeBase, "attestd-bench-"); err != nil {
		return nil, err
	}
	if e.tpm, err = h.swtpm.start(h.tmp); err != nil {
		e.close()
		return nil, err
	}
	if e.proxy, err = newTPMProxy(filepath.Join(e.dir, "tpm.sock"), e.tpm.Socket); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// start runs attestd in the environment.
func (e *tpmEnv) start(ctx context.Context, binary string) error {
	var err error
	e.daemon, err = startDaemon(ctx, daemonConfig{
		Binary: binary, RuntimeDir: e.run, WorkDir: e.dir,
		Backend: "tpm", TPMDevice: "unix:" + e.proxy.Socket(),
		Executors: []string{"/bin/sh"},
	})
	if err != nil {
		return err
	}
	e.c, err = e.daemon.client()
	return err
}

// startTPMEnv is newTPMEnv and start.
func (h *harness) startTPMEnv(ctx context.Context, runtimeBase string) (*tpmEnv, error) {
	e, err := h.newTPMEnv(runtimeBase)
	if err != nil {
		return nil, err
	}
	if err := e.start(ctx, h.attestd); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

func (e *tpmEnv) close() {
	if e.c != nil {
		e.c.Close()
	}
	if e.daemon != nil {
		e.daemon.stop()
	}
	if e.proxy != nil {
		e.proxy.Close()
	}
	if e.tpm != nil {
		e.tpm.stop()
	}
	os.RemoveAll(e.run)
	os.RemoveAll(e.dir)
}

// A build as the benchmark's executor runs it.
const buildID = "bench-build-1"

var buildRequest = []*apiv1.ResourceDescriptor{{
	Name: "source", Uri: "git+https://example.com/app",
	Digest: map[string]string{"gitCommit": strings.Repeat("1", 40)},
}}

func nonce() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// descriptors are n artifacts with distinct SHA-256 digests.
func descriptors(prefix string, n int) []*apiv1.ResourceDescriptor {
	out := make([]*apiv1.ResourceDescriptor, n)
	for i := range out {
		name := fmt.Sprintf("%s-%04d.bin", prefix, i)
		d := sha256.Sum256([]byte(name))
		out[i] = &apiv1.ResourceDescriptor{Name: name, Digest: map[string]string{"sha256": hex.EncodeToString(d[:])}}
	}
	return out
}

// provenance is an in-toto statement about output, for SignStatement.
func provenance(output *apiv1.ResourceDescriptor) []byte {
	return fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":%q,"digest":{"sha256":%q}}],`+
		`"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/bench/v1",`+
		`"externalParameters":{"build":%q}},"runDetails":{"builder":{"id":"https://example.com/bench-builder"}}}}`,
		output.Name, output.Digest["sha256"], buildID)
}

// bundleBytes is a GetBundle response as `attestctl bundle` writes it:
// the envelopes, the inclusion proofs and the event log, one per line.
func bundleBytes(resp *apiv1.GetBundleResponse) []byte {
	lines := resp.GetEnvelopes()
	for _, p := range resp.GetInclusionProofs() {
		lines = append(lines, scai.Carrier(scai.PayloadTypeInclusionProof, p))
	}
	lines = append(lines, scai.Carrier(scai.PayloadTypeCEL, resp.GetEventLog()))
	return scai.EncodeBundle(lines...)
}
