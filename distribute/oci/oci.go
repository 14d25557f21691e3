// Package oci publishes attestd's attestations to OCI registries and finds
// them there: a build's output files as an OCI artifact, and each signed
// envelope of the build as a Sigstore bundle attached to the output's
// manifest as an OCI referrer (docs/distributing.md gives the layout). It
// works with registries that have the OCI 1.1 referrers API and with those
// that do not (the referrers tag schema), through oras-go.
//
// Pulling is bounded (Limits) and checks every digest; it does not verify
// signatures or evidence: package verify does that on what Pull returns.
package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Errors callers branch on; every error of Pull wraps one of them or
// ErrReference.
var (
	// ErrReference: the reference is not REPO@sha256:HEX (oci:// optional).
	ErrReference = errors.New("bad OCI reference")
	// ErrPlainHTTP: plain HTTP was asked for a registry that is not on the
	// loopback interface.
	ErrPlainHTTP = errors.New("plain HTTP refused")
	// ErrUnreachable: the registry could not be reached or did not answer.
	ErrUnreachable = errors.New("registry unreachable")
	// ErrRefused: the registry answered with an error (unauthorized,
	// denied, a server error).
	ErrRefused = errors.New("registry refused the request")
	// ErrProtocol: the registry answered something that is not what the
	// OCI distribution specification says it should.
	ErrProtocol = errors.New("registry answered garbage")
	// ErrNotFound: the registry does not have the manifest asked about.
	ErrNotFound = errors.New("not in the registry")
	// ErrDigest: content does not match the digest or size it was fetched
	// by (a tampered blob or manifest).
	ErrDigest = errors.New("content does not match its digest")
	// ErrSubject: a referrer names another manifest as its subject.
	ErrSubject = errors.New("referrer of another manifest")
	// ErrLayout: a referrer is not laid out as docs/distributing.md says.
	ErrLayout = errors.New("not an attestd attestation referrer")
	// ErrBundle: a Sigstore bundle of the build to publish does not verify.
	ErrBundle = errors.New("a Sigstore bundle of the build does not verify")
	// ErrUnverified: a baked image's provenance or reference values are not
	// signed by the bake key, or not what they should be.
	ErrUnverified = errors.New("not verified with the bake key")
	// ErrNotOutput: a file or manifest to publish is not an output of the
	// build.
	ErrNotOutput = errors.New("not an output of the build")
	// ErrLimit: a bound of Limits was reached.
	ErrLimit = errors.New("limit reached")
)

// Options say how to reach a registry. The zero value uses HTTPS, the
// Docker config file's credentials and DefaultLimits.
type Options struct {
	// PlainHTTP talks HTTP instead of HTTPS. Only a loopback registry
	// (localhost, 127.0.0.0/8, ::1) may be reached so; any other host is
	// refused with ErrPlainHTTP.
	PlainHTTP bool
	// Credential returns the credentials for a registry (host:port); nil
	// reads the Docker config file ($DOCKER_CONFIG/config.json, else
	// ~/.docker/config.json) and its credential helpers.
	Credential auth.CredentialFunc
	// Limits bound what Pull fetches; zero fields take DefaultLimits.
	Limits Limits
	// transport is the HTTP transport (tests); nil means a clone of
	// http.DefaultTransport.
	transport http.RoundTripper
}

// Repository is one repository of a registry.
type Repository struct {
	repo   *remote.Repository
	limits Limits
	stats  *counter
}

// Open returns a client for the repository named by ref (HOST[:PORT]/NAME;
// a tag or digest in ref is ignored). It does not contact the registry.
func Open(ref string, o Options) (*Repository, error) {
	r, err := registry.ParseReference(strings.TrimPrefix(ref, "oci://"))
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %v", ErrReference, ref, err)
	}
	r.Reference = ""
	if o.PlainHTTP && !loopback(r.Host()) {
		return nil, fmt.Errorf("%w: %s is not a loopback address; only a registry on this machine may be reached without TLS", ErrPlainHTTP, r.Host())
	}
	cred := o.Credential
	if cred == nil {
		store, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("read the Docker config file: %w", err)
		}
		cred = credentials.Credential(store)
	}
	base := o.transport
	if base == nil {
		base = defaultTransport()
	}
	stats := &counter{base: base}
	repo := &remote.Repository{
		Client:    &auth.Client{Client: &http.Client{Transport: stats}, Credential: cred, Cache: auth.NewCache()},
		Reference: r,
		PlainHTTP: o.PlainHTTP,
		// A registry may refuse deletes (distribution's default): the
		// referrers tag schema's superseded indexes are left untagged for
		// its garbage collection instead of failing the push.
		SkipReferrersGC: true,
	}
	limits := o.Limits.withDefaults()
	repo.ReferrerListMaxPages = limits.MaxPages
	repo.MaxMetadataBytes = limits.MaxListBytes
	return &Repository{repo: repo, limits: limits, stats: stats}, nil
}

// Name is the repository as HOST[:PORT]/NAME.
func (r *Repository) Name() string { return r.repo.Reference.String() }

// Stats says how many requests the client made and how many response bytes
// it read so far.
func (r *Repository) Stats() Stats { return r.stats.snapshot() }

// ParseReference splits oci://HOST[:PORT]/NAME@sha256:HEX (oci:// optional)
// into the repository and the manifest digest. A tag is refused: what is
// verified must be what is pulled.
func ParseReference(s string) (repo string, d digest.Digest, err error) {
	rest := strings.TrimPrefix(s, "oci://")
	name, dig, ok := strings.Cut(rest, "@")
	if !ok {
		return "", "", fmt.Errorf("%w: %q names no digest: want oci://HOST/NAME@sha256:HEX", ErrReference, s)
	}
	d, err = digest.Parse(dig)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", "", fmt.Errorf("%w: %q: want a sha256 digest after @", ErrReference, s)
	}
	if _, err := registry.ParseReference(name); err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrReference, s, err)
	}
	return name, d, nil
}

// loopback tells whether host (HOST or HOST:PORT) is localhost or a loopback
// IP literal. Names other than localhost are not resolved: a name that
// resolves to a loopback address today may not tomorrow.
func loopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// defaultTransport is http.DefaultTransport with deadlines on the parts of
// a request that can hang before any data flows.
func defaultTransport() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = 30 * time.Second
	t.ResponseHeaderTimeout = 2 * time.Minute
	return t
}

// classify wraps err from oras-go in the package's sentinel naming what
// went wrong, after what (the operation).
func classify(what string, err error) error {
	var ne net.Error
	var resp *errcode.ErrorResponse
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	for _, m := range orasErrors {
		if errors.Is(err, m.oras) {
			return fmt.Errorf("%s: %w: %v", what, m.ours, err)
		}
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: %w", what, err)
	case errors.As(err, &resp):
		return fmt.Errorf("%s: %w: %v", what, ErrRefused, err)
	case errors.As(err, &ne):
		return fmt.Errorf("%s: %w: %v", what, ErrUnreachable, err)
	default:
		return fmt.Errorf("%s: %w: %v", what, ErrProtocol, err)
	}
}

// sentinels are this package's errors: classify keeps them as they are.
var sentinels = []error{ErrReference, ErrPlainHTTP, ErrBundle, ErrUnverified, ErrNotOutput, ErrUnreachable, ErrRefused, ErrProtocol, ErrNotFound, ErrDigest, ErrSubject, ErrLayout, ErrLimit}

// orasErrors map oras-go's errors to this package's.
var orasErrors = []struct{ oras, ours error }{
	{content.ErrMismatchedDigest, ErrDigest},
	{content.ErrTrailingData, ErrDigest},
	{content.ErrInvalidDescriptorSize, ErrDigest},
	{io.ErrUnexpectedEOF, ErrDigest},
	{errdef.ErrNotFound, ErrNotFound},
	{errdef.ErrSizeExceedsLimit, ErrLimit},
	{errdef.ErrTooManyPages, ErrLimit},
	{auth.ErrBasicCredentialNotFound, ErrRefused},
}
