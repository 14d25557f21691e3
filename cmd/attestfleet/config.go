package main

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	ita "github.com/in-toto/attestation/go/v1"

	"github.com/attestd/attestd/fleet"
	"github.com/attestd/attestd/internal/boundedfile"
	"github.com/attestd/attestd/internal/yamlfile"
	"github.com/attestd/attestd/verify"
)

// DefaultConfigPath is where serve looks for its config file.
const DefaultConfigPath = "/etc/attestfleet/config.yaml"

// defaultVerifierID names the service in the results it signs.
const defaultVerifierID = "https://attestd.dev/attestfleet"

// fileConfig is the config file (YAML, docs/fleet.md "Configuration").
// Unknown keys are refused.
type fileConfig struct {
	// Listen is "unix:/path" or "host:port".
	Listen string `yaml:"listen"`
	// TLS serves the API over TLS; with client_ca, mutual TLS.
	TLS struct {
		Cert     string `yaml:"cert"`
		Key      string `yaml:"key"`
		ClientCA string `yaml:"client_ca"`
	} `yaml:"tls"`
	Store struct {
		SQLite   string `yaml:"sqlite"`
		Postgres string `yaml:"postgres"`
	} `yaml:"store"`
	Policy  string `yaml:"policy"`
	Results struct {
		Key        string `yaml:"key"`
		VerifierID string `yaml:"verifier_id"`
		PolicyURI  string `yaml:"policy_uri"`
	} `yaml:"results"`
	Registration struct {
		EKRoots         []string `yaml:"ek_roots"`
		EKIntermediates []string `yaml:"ek_intermediates"`
	} `yaml:"registration"`
	NonceLifetime time.Duration `yaml:"nonce_lifetime"`
	Limits        struct {
		MaxBundle          int    `yaml:"max_bundle"`
		MaxConcurrentCalls uint32 `yaml:"max_concurrent_calls"`
	} `yaml:"limits"`
	Health struct {
		Every time.Duration `yaml:"every"`
	} `yaml:"health"`
	Prune struct {
		Every       time.Duration `yaml:"every"`
		KeepExpired time.Duration `yaml:"keep_expired"`
	} `yaml:"prune"`
	Drain   time.Duration `yaml:"drain"`
	Metrics string        `yaml:"metrics"`
}

// config is the checked runtime configuration: the files it names are read.
type config struct {
	path     string
	listen   string
	sqlite   string
	postgres string
	metrics  string
	policy   *verify.Policy
	service  fleet.Config // without Store, Verifier, Registerer, Logger
}

// errConfig marks a config that cannot be used.
var errConfig = errors.New("invalid config")

// configError is a problem at a place in the config file.
func configError(path string, err error) error {
	var ye *yamlfile.Error
	if errors.As(err, &ye) {
		ye.Kind = errConfig
		return fmt.Errorf("config %s: %w", path, ye)
	}
	return fmt.Errorf("config %s: %w: %v", path, errConfig, err)
}

// maxConfigSize bounds the config file.
const maxConfigSize = 1 << 20

// loadConfig reads and checks the config file at path; relative file names
// in it are relative to its directory.
func loadConfig(path string) (*config, error) {
	raw, err := boundedfile.Read(path, maxConfigSize)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return parseConfig(path, raw)
}

func parseConfig(path string, raw []byte) (*config, error) {
	var fc fileConfig
	nodes, err := yamlfile.Decode(raw, &fc)
	if err != nil {
		return nil, configError(path, err)
	}
	c, err := fc.check(nodes, filepath.Dir(path))
	if err != nil {
		return nil, configError(path, err)
	}
	c.path = path
	return c, nil
}

// check turns the file's values into a config; nodes place the errors.
func (fc *fileConfig) check(nodes yamlfile.Nodes, dir string) (*config, error) {
	c := &config{listen: fc.Listen, metrics: fc.Metrics, sqlite: fc.Store.SQLite, postgres: fc.Store.Postgres}
	if c.listen == "" {
		c.listen = "unix:/run/attestfleet/attestfleet.sock"
	}
	if path, ok := strings.CutPrefix(c.listen, "unix:"); ok && !filepath.IsAbs(path) {
		return nil, nodes.Errorf("listen", "want unix:/absolute/path or host:port, got %q", c.listen)
	}
	switch {
	case c.sqlite != "" && c.postgres != "":
		return nil, nodes.Errorf("store", "give one of sqlite and postgres, not both")
	case c.sqlite == "" && c.postgres == "":
		c.sqlite = "/var/lib/attestfleet/fleet.db"
	case c.sqlite != "":
		c.sqlite = inDir(dir, c.sqlite)
	}
	if fc.Policy == "" {
		return nil, nodes.Errorf("policy", "required: the appraisal policy file (docs/verifying.md)")
	}
	policyPath := inDir(dir, fc.Policy)
	p, err := verify.LoadPolicy(policyPath)
	if err != nil {
		return nil, nodes.Errorf("policy", "%s: %v", policyPath, err)
	}
	c.policy = p
	if err := fc.results(c, nodes, dir, policyPath); err != nil {
		return nil, err
	}
	if err := fc.registration(c, nodes, dir); err != nil {
		return nil, err
	}
	if err := fc.tls(c, nodes, dir); err != nil {
		return nil, err
	}
	return c, fc.limits(c, nodes)
}

func (fc *fileConfig) results(c *config, nodes yamlfile.Nodes, dir, policyPath string) error {
	r := fc.Results
	if r.Key == "" {
		return nodes.Errorf("results.key", "required: the PEM private key (ECDSA P-256) that signs the results")
	}
	key, err := readSigningKey(inDir(dir, r.Key))
	if err != nil {
		return nodes.Errorf("results.key", "%v", err)
	}
	o := verify.ResultOptions{VerifierID: r.VerifierID, Version: version, PolicyURI: r.PolicyURI}
	if o.VerifierID == "" {
		o.VerifierID = defaultVerifierID
	}
	if o.PolicyURI == "" {
		o.PolicyURI = (&url.URL{Scheme: "file", Path: policyPath}).String()
	}
	for key, u := range map[string]string{"results.verifier_id": o.VerifierID, "results.policy_uri": o.PolicyURI} {
		if pu, err := url.Parse(u); err != nil || pu.Scheme == "" {
			return nodes.Errorf(key, "want an absolute URI (https://…, file:///…), got %q", u)
		}
	}
	if res := c.policy.Resolved; res.Reference != nil {
		o.Inputs = append(o.Inputs, referenceInput(res))
	}
	c.service.Signer, c.service.Results = key, o
	return nil
}

func (fc *fileConfig) registration(c *config, nodes yamlfile.Nodes, dir string) error {
	reg := fc.Registration
	if len(reg.EKRoots) == 0 {
		if len(reg.EKIntermediates) > 0 {
			return nodes.Errorf("registration.ek_intermediates", "intermediates without registration.ek_roots")
		}
		return nil
	}
	c.service.EKRoots = x509.NewCertPool()
	for i, f := range reg.EKRoots {
		certs, err := readCerts(inDir(dir, f))
		if err != nil {
			return nodes.Errorf(fmt.Sprintf("registration.ek_roots[%d]", i), "%v", err)
		}
		for _, cert := range certs {
			c.service.EKRoots.AddCert(cert)
		}
	}
	for i, f := range reg.EKIntermediates {
		certs, err := readCerts(inDir(dir, f))
		if err != nil {
			return nodes.Errorf(fmt.Sprintf("registration.ek_intermediates[%d]", i), "%v", err)
		}
		c.service.EKIntermediates = append(c.service.EKIntermediates, certs...)
	}
	return nil
}

// tls reads the server certificate and key, and the client CAs of mutual
// TLS.
func (fc *fileConfig) tls(c *config, nodes yamlfile.Nodes, dir string) error {
	t := fc.TLS
	if t.Cert == "" && t.Key == "" && t.ClientCA == "" {
		return nil
	}
	if t.Cert == "" || t.Key == "" {
		return nodes.Errorf("tls", "cert and key go together")
	}
	cert, err := tls.LoadX509KeyPair(inDir(dir, t.Cert), inDir(dir, t.Key))
	if err != nil {
		return nodes.Errorf("tls", "%v", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13}
	if t.ClientCA != "" {
		certs, err := readCerts(inDir(dir, t.ClientCA))
		if err != nil {
			return nodes.Errorf("tls.client_ca", "%v", err)
		}
		cfg.ClientCAs = x509.NewCertPool()
		for _, ca := range certs {
			cfg.ClientCAs.AddCert(ca)
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	c.service.TLS = cfg
	return nil
}

// minNonceLifetime is the shortest nonce lifetime accepted: an executor must
// be able to call attestd and come back.
const minNonceLifetime = time.Second

func (fc *fileConfig) limits(c *config, nodes yamlfile.Nodes) error {
	s := &c.service
	if fc.NonceLifetime != 0 && fc.NonceLifetime < minNonceLifetime {
		return nodes.Errorf("nonce_lifetime", "want at least %v, got %v", minNonceLifetime, fc.NonceLifetime)
	}
	if fc.Limits.MaxBundle < 0 || fc.Limits.MaxBundle > maxBundleLimit {
		return nodes.Errorf("limits.max_bundle", "want 1 to %d bytes, got %d", maxBundleLimit, fc.Limits.MaxBundle)
	}
	for key, d := range map[string]time.Duration{"health.every": fc.Health.Every, "prune.every": fc.Prune.Every, "prune.keep_expired": fc.Prune.KeepExpired, "drain": fc.Drain} {
		if d < 0 {
			return nodes.Errorf(key, "want a positive duration, got %v", d)
		}
	}
	s.NonceLifetime, s.MaxBundle, s.MaxConcurrentCalls = fc.NonceLifetime, fc.Limits.MaxBundle, fc.Limits.MaxConcurrentCalls
	s.HealthEvery, s.PruneEvery, s.KeepExpired, s.Drain = fc.Health.Every, fc.Prune.Every, fc.Prune.KeepExpired, fc.Drain
	return nil
}

// maxBundleLimit is the largest limits.max_bundle: the client's message
// limit less room for the other fields.
const maxBundleLimit = 60 << 20

func inDir(dir, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(dir, name)
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := boundedfile.Read(path, maxConfigSize)
	if err != nil {
		return nil, err
	}
	certs, err := verify.ParsePEMCertificates(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// readSigningKey reads an ECDSA P-256 private key (PEM "EC PRIVATE KEY" or
// PKCS #8 "PRIVATE KEY").
func readSigningKey(path string) (crypto.Signer, error) {
	b, err := boundedfile.Read(path, maxConfigSize)
	if err != nil {
		return nil, err
	}
	k, err := verify.ParsePEMPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// referenceInput names the signed reference values the policy verifies
// against, for the VSAs' inputAttestations.
func referenceInput(res *verify.Resolved) *ita.ResourceDescriptor {
	return &ita.ResourceDescriptor{Digest: map[string]string{"sha256": hex.EncodeToString(res.ReferenceSHA256[:])}}
}
