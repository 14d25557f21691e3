// Package registrytest starts throw-away OCI registries for tests: the
// distribution v3 registry, Debian's docker-registry 2.8 and
// go-containerregistry's registry (ReferrersAPI). Only the last serves the
// OCI 1.1 referrers API (distribution v3.1.2 does not implement it,
// whatever its docs say of OCI): clients use the referrers tag schema on
// the other two. Each serves plain HTTP on a loopback port from a temp
// storage directory and stops in t.Cleanup.
//
// Test-only: it imports "testing" and must never be imported by non-test
// code. A missing server fails the test (CI runs these tests): run
// scripts/install-deps.sh.
package registrytest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running registry.
type Registry struct {
	// Host is HOST:PORT on the loopback interface (plain HTTP).
	Host string
	// Name says which server this is, for test names.
	Name string
	// Referrers tells whether it serves the OCI 1.1 referrers API.
	Referrers bool
	// storage is the registry's blob storage root; log its log file.
	storage, log string
	kind         Kind
}

// BlobPath is where the registry stores the blob of sha256 digest hex
// (tests tamper with it: every kind serves it as it is on disk).
func (r *Registry) BlobPath(hex string) string {
	if r.kind.referrers {
		return filepath.Join(r.storage, "sha256", hex)
	}
	return filepath.Join(r.storage, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// Log returns what the registry logged so far. The ReferrersAPI registry
// logs every request as "METHOD URL [STATUS CODE MESSAGE]"; the others
// only warnings.
func (r *Registry) Log(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(r.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Kind is a registry server the tests run against.
type Kind struct {
	Name string
	// binary returns the server's executable or an error naming how to get
	// it.
	binary func() (string, error)
	// referrers: the server serves the referrers API, and is the
	// referrers-registry program (flags, not a configuration file).
	referrers bool
}

var (
	// Distribution is the distribution v3 registry, installed into
	// bin/tools by scripts/install-deps.sh.
	Distribution = Kind{Name: "distribution-v3", binary: distributionBinary}
	// DockerRegistry is Debian's docker-registry package (2.8.2).
	DockerRegistry = Kind{Name: "docker-registry-2.8", binary: debianBinary}
	// ReferrersAPI is go-containerregistry's registry with its referrers
	// API on (internal/registrytest/cmd/referrers-registry, built by the
	// first test that starts it). Its listing reports a referrer's config
	// media type as its artifact type and drops annotations; it has no
	// authentication (StartWithPassword refuses it).
	ReferrersAPI = Kind{Name: "ggcr-referrers-api", binary: referrersBinary, referrers: true}
)

// Kinds are every registry server the round trips run against.
var Kinds = []Kind{Distribution, DockerRegistry, ReferrersAPI}

// startTimeout bounds how long a registry may take to answer /v2/; generous
// for a loaded 2-core machine.
const startTimeout = 60 * time.Second

// Start runs a registry of kind k until the test ends.
func Start(t testing.TB, k Kind) *Registry { return start(t, k, "") }

// StartWithPassword runs a registry of kind k that lets only user, with
// password, in (htpasswd: HTTP basic authentication).
func StartWithPassword(t testing.TB, k Kind, user, password string) *Registry {
	t.Helper()
	if k.referrers {
		t.Fatalf("registry %s has no authentication", k.Name)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte(user+":"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return start(t, k, fmt.Sprintf("auth:\n  htpasswd:\n    realm: registrytest\n    path: %s\n", htpasswd))
}

// start runs a registry of kind k with the configuration's extra section.
func start(t testing.TB, k Kind, extra string) *Registry {
	t.Helper()
	bin, err := k.binary()
	if err != nil {
		t.Fatalf("registry %s: %v", k.Name, err)
	}
	dir := t.TempDir()
	host := freeLoopbackAddr(t)
	storage := filepath.Join(dir, "storage")
	args := []string{"-addr", host, "-storage", storage}
	if !k.referrers {
		config := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(config, []byte(configYAML(storage, host)+extra), 0o600); err != nil {
			t.Fatal(err)
		}
		args = []string{"serve", config}
	}
	logPath := filepath.Join(dir, "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start %s (%s): %v", k.Name, bin, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() { stop(cmd, exited) })
	if err := waitReady(host, exited, &waitErr); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("registry %s did not come up: %v\n%s", k.Name, err, log)
	}
	return &Registry{Host: host, Name: k.Name, Referrers: k.referrers, storage: storage, log: logPath, kind: k}
}

// configYAML is the registry configuration: filesystem storage in dir
// (deletes refused, the default), plain HTTP on addr, little logging.
func configYAML(dir, addr string) string {
	return fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
`, dir, addr)
}

// freeLoopbackAddr returns a loopback address with a port free a moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls GET /v2/ until the registry answers (200, or 401 when it
// wants a password), it exits, or startTimeout passes.
func waitReady(host string, exited <-chan struct{}, waitErr *error) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 5 * time.Second}
	url := "http://" + host + "/v2/"
	for {
		select {
		case <-exited:
			return fmt.Errorf("the registry exited: %v", *waitErr)
		case <-ctx.Done():
			return fmt.Errorf("no 200 from GET %s within %v", url, startTimeout)
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := client.Get(url)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
			return nil
		}
	}
}

// stop interrupts the registry and kills it if it has not exited after 10 s.
func stop(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// distributionBinary is bin/tools/registry under the module root.
func distributionBinary() (string, error) { return toolPath("registry") }

// Tool returns the path of bin/tools/NAME, a Go tool scripts/install-deps.sh
// installs (registry, oras), or fails the test.
func Tool(t testing.TB, name string) string {
	t.Helper()
	path, err := toolPath(name)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

func toolPath(name string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "tools", name)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s is not installed at %s: run scripts/install-deps.sh", name, bin)
	}
	return bin, nil
}

// referrersBinary builds internal/registrytest/cmd/referrers-registry into
// bin/tools, once per test binary (a few seconds when the build cache is
// warm), so that it is never older than its source. It builds into a
// temporary file renamed into place: test binaries of several packages may
// build it at the same time.
func referrersBinary() (string, error) {
	referrersBuild.once.Do(func() {
		referrersBuild.path, referrersBuild.err = buildReferrers()
	})
	return referrersBuild.path, referrersBuild.err
}

var referrersBuild struct {
	once sync.Once
	path string
	err  error
}

func buildReferrers() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bin", "tools")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, ".referrers-registry-")
	if err != nil {
		return "", err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-o", tmp.Name(), "./internal/registrytest/cmd/referrers-registry")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build referrers-registry: %v\n%s", err, out)
	}
	bin := filepath.Join(dir, "referrers-registry")
	if err := os.Rename(tmp.Name(), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// debianBinary is Debian's docker-registry.
func debianBinary() (string, error) {
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		return "", fmt.Errorf("docker-registry (Debian package docker-registry) is not installed: run scripts/install-deps.sh")
	}
	return bin, nil
}

// moduleRoot finds the directory holding go.mod from the working directory
// up (go test runs in the package's directory).
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
