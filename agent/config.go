package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/attestd/attestd/internal/boundedfile"
	"github.com/attestd/attestd/internal/yamlfile"
)

// DefaultConfigPath is where the daemon looks for its config file.
const DefaultConfigPath = "/etc/attestd/config.yaml"

// FileConfig is the on-disk config file (YAML). Unknown keys are rejected.
type FileConfig struct {
	// Backend: "auto", "tpm", "snp", "tdx" or "simulator".
	Backend string `yaml:"backend"`
	TPM     struct {
		// Device: "" (auto: /dev/tpmrm0, then /dev/tpm0), a device path,
		// "unix:/path" (swtpm unix socket) or "tcp:host:port".
		Device string `yaml:"device"`
		// Timeout bounds each TPM command, e.g. "30s" (the default). A TPM
		// that does not answer in time is taken as failed: attestd stops
		// serving and exits so that systemd restarts it.
		Timeout time.Duration `yaml:"timeout"`
	} `yaml:"tpm"`
	// Register is the PCR the agent extends its events into (default 13).
	Register *PCR `yaml:"register"`
	// ImageMetadata is the image identity file measured at launch.
	ImageMetadata string `yaml:"image_metadata"`
	// Executors are binaries measured at launch, in order.
	Executors []string `yaml:"executors"`
	// Allow lists the callers admitted to the socket: readers may fetch the
	// identity, attestations and the event log; executors may also drive the
	// build lifecycle.
	Allow struct {
		Readers   Principals `yaml:"readers"`
		Executors Principals `yaml:"executors"`
	} `yaml:"allow"`
	Storage struct {
		// Encrypted are the paths the builds write to (the runner's work
		// directory, scratch volumes) that must be on a dm-crypt mapping with
		// an ephemeral key at launch; otherwise attestd refuses to start.
		Encrypted []string `yaml:"encrypted"`
	} `yaml:"storage"`
}

// PCR is the index of a PCR the agent may extend its events into: one of
// 8 to 22 except the resettable 16 (ValidateRegister).
type PCR int

// UnmarshalYAML accepts an integer that ValidateRegister accepts.
func (p *PCR) UnmarshalYAML(n *yaml.Node) error {
	var i int
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" || n.Decode(&i) != nil {
		return fmt.Errorf("want a PCR index from 8 to 22, got %q", n.Value)
	}
	if err := checkPCR(i); err != nil {
		return err
	}
	*p = PCR(i)
	return nil
}

// Principals are callers by uid or primary gid.
type Principals struct {
	UIDs []uint32 `yaml:"uids"`
	GIDs []uint32 `yaml:"gids"`
}

// Config is the validated runtime configuration of the agent.
type Config struct {
	// Path and Raw are the config file as read; Raw is what is measured.
	Path string
	Raw  []byte

	Backend   string
	TPMDevice string
	// TPMTimeout bounds each TPM command; 0 means the backend's default.
	TPMTimeout time.Duration
	// TPMKeyFile keeps the TPM-wrapped env key across restarts within a
	// boot; set by the daemon to a file in its runtime dir.
	TPMKeyFile    string
	Register      int
	ImageMetadata string
	Executors     []string
	// Readers and Builders are the callers allowed (executor processes are
	// "builders" here to keep them apart from the measured executor binaries).
	Readers  Principals
	Builders Principals
	// EncryptedPaths must be on ephemeral dm-crypt at launch (docs/storage.md).
	EncryptedPaths []string
}

// MinTPMTimeout is the shortest TPM command deadline accepted: below it a
// healthy but busy TPM would be taken for a dead one.
const MinTPMTimeout = 100 * time.Millisecond

// CheckTPMTimeout refuses a TPM command deadline below MinTPMTimeout (0
// means the default).
func CheckTPMTimeout(d time.Duration) error {
	if d < 0 || (d > 0 && d < MinTPMTimeout) {
		return fmt.Errorf("%v: must be at least %v", d, MinTPMTimeout)
	}
	return nil
}

// ErrConfig marks a config file that cannot be used.
var ErrConfig = errors.New("invalid config")

// ConfigError is a config file that cannot be used. Err is a
// *yamlfile.Error (line, key, what is allowed) for a problem in the file's
// contents. ConfigError is ErrConfig.
type ConfigError struct {
	Path string
	Err  error
}

func (e *ConfigError) Error() string        { return "config " + e.Path + ": " + e.Err.Error() }
func (e *ConfigError) Unwrap() error        { return e.Err }
func (e *ConfigError) Is(target error) bool { return target == ErrConfig }

// maxConfigSize bounds the config file.
const maxConfigSize = 1 << 20

// LoadConfig reads and validates the config file at path. A missing file at
// the default path yields the defaults, measured as an empty config (what
// the defaults are); a missing file elsewhere is an error.
func LoadConfig(path string) (*Config, error) {
	raw, err := boundedfile.Read(path, maxConfigSize)
	if errors.Is(err, os.ErrNotExist) && path == DefaultConfigPath {
		return ParseConfig(path, []byte{})
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, raw)
}

// ParseConfig validates raw (YAML) and turns it into a Config. Its errors
// are *ConfigError.
func ParseConfig(path string, raw []byte) (*Config, error) {
	var fc FileConfig
	nodes, err := yamlfile.Decode(raw, &fc)
	if err != nil {
		return nil, &ConfigError{Path: path, Err: err}
	}
	c := &Config{
		Path:           path,
		Raw:            raw,
		Backend:        fc.Backend,
		TPMDevice:      fc.TPM.Device,
		TPMTimeout:     fc.TPM.Timeout,
		Register:       13,
		ImageMetadata:  fc.ImageMetadata,
		Executors:      fc.Executors,
		Readers:        fc.Allow.Readers,
		Builders:       fc.Allow.Executors,
		EncryptedPaths: fc.Storage.Encrypted,
	}
	if c.Backend == "" {
		c.Backend = "auto"
	}
	if fc.Register != nil {
		c.Register = int(*fc.Register)
	}
	if err := c.validate(nodes); err != nil {
		return nil, &ConfigError{Path: path, Err: err}
	}
	return c, nil
}

// Backends are the evidence backends a config or flag may name.
var Backends = []string{"auto", "tpm", "snp", "tdx", "simulator"}

// CheckBackend refuses a backend name not in Backends.
func CheckBackend(name string) error {
	if !slices.Contains(Backends, name) {
		return errors.New("unknown backend; want auto, tpm, snp, tdx or simulator")
	}
	return nil
}

// validate checks what the file's syntax does not; nodes place the errors.
func (c *Config) validate(nodes yamlfile.Nodes) error {
	if CheckBackend(c.Backend) != nil {
		return nodes.Errorf("backend", "unknown backend %q (want %s)", c.Backend, strings.Join(Backends, ", "))
	}
	if CheckTPMTimeout(c.TPMTimeout) != nil {
		return nodes.Errorf("tpm.timeout", "want at least %v, got %v", MinTPMTimeout, c.TPMTimeout)
	}
	for i, e := range c.Executors {
		if !filepath.IsAbs(e) {
			return nodes.Errorf(fmt.Sprintf("executors[%d]", i), "want an absolute path, got %q", e)
		}
	}
	for i, p := range c.EncryptedPaths {
		if !filepath.IsAbs(p) {
			return nodes.Errorf(fmt.Sprintf("storage.encrypted[%d]", i), "want an absolute path, got %q", p)
		}
	}
	if c.ImageMetadata != "" && !filepath.IsAbs(c.ImageMetadata) {
		return nodes.Errorf("image_metadata", "want an absolute path, got %q", c.ImageMetadata)
	}
	return nil
}

// ValidateRegister refuses PCRs that are out of range or resettable.
func ValidateRegister(pcr int) error {
	if err := checkPCR(pcr); err != nil {
		return fmt.Errorf("register %d: %w", pcr, err)
	}
	return nil
}

func checkPCR(pcr int) error {
	switch {
	case pcr < 0 || pcr > 23:
		return fmt.Errorf("want a PCR index from 8 to 22, got %d", pcr)
	case pcr == 16 || pcr == 23:
		return fmt.Errorf("PCR %d is resettable and cannot hold evidence (want 8 to 22, not 16)", pcr)
	case pcr < 8:
		return fmt.Errorf("PCR %d belongs to the firmware (want 8 to 22, not 16)", pcr)
	}
	return nil
}
