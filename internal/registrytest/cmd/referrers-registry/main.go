// Command referrers-registry is the test registry that serves the OCI 1.1
// referrers API (GET /v2/NAME/referrers/DIGEST): go-containerregistry's
// registry package (pkg/registry, a real registry implementation from a
// well-known library, and the only one with the referrers API that builds
// here) with its referrers support turned on, which `crane registry serve`
// does not do. internal/registrytest builds and starts it; it is not
// shipped.
//
// Its deviations from the OCI distribution specification, which the tests
// rely on or work around (docs/distributing.md):
//   - a listing's artifactType is the referrer's config media type, not its
//     artifactType; the artifactType query is ignored (no
//     OCI-Filters-Applied) and annotations are dropped;
//   - a manifest pushed with a subject gets no OCI-Subject header, so
//     clients (oras-go) also keep the referrers tag schema's index;
//   - manifests are kept in memory, blobs on disk under -storage as
//     sha256/HEX, served as they are on disk (tests tamper with them), and
//     there is no authentication, paging or deletion of blobs.
//
// Usage: referrers-registry -addr 127.0.0.1:PORT -storage DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "referrers-registry:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("referrers-registry", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:5000", "address to listen on (plain HTTP)")
	storage := fs.String("storage", "", "directory for blobs (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *storage == "" {
		return errors.New("-storage is required")
	}
	if err := os.MkdirAll(*storage, 0o700); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	srv := &http.Server{
		Handler: registry.New(
			registry.WithReferrersSupport(true),
			registry.WithBlobHandler(fileBlobs{dir: *storage}),
			registry.Logger(logger),
		),
		ReadHeaderTimeout: 10 * time.Second,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fileBlobs stores blobs as files DIR/sha256/HEX and serves them as they
// are on disk. Unlike the package's own disk handler, Stat does not hash
// the file: a blob changed on disk is served changed, for the client to
// catch.
type fileBlobs struct{ dir string }

func (f fileBlobs) path(h v1.Hash) string { return filepath.Join(f.dir, h.Algorithm, h.Hex) }

func (f fileBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(f.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return 0, registry.ErrNotFound
	} else if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (f fileBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	rc, err := os.Open(f.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, registry.ErrNotFound
	}
	return rc, err
}

// Put writes the blob to a temporary file and renames it into place once
// the registry's reader, which checks the digest as it reads, is done.
func (f fileBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	if err := os.MkdirAll(filepath.Dir(f.path(h)), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(f.path(h)), "upload-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, rc); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), f.path(h))
}
