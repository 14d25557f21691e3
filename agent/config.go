package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
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
		Timeout string `yaml:"timeout"`
	} `yaml:"tpm"`
	// Register is the PCR the agent extends its events into (default 13).
	Register *int `yaml:"register"`
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

// maxConfigSize bounds the config file.
const maxConfigSize = 1 << 20

// LoadConfig reads and validates the config file at path. A missing file at
// the default path yields the defaults, measured as an empty config (what
// the defaults are); a missing file elsewhere is an error.
func LoadConfig(path string) (*Config, error) {
	raw, err := readBounded(path, maxConfigSize)
	if errors.Is(err, os.ErrNotExist) && path == DefaultConfigPath {
		return ParseConfig(path, []byte{})
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, raw)
}

// ParseConfig validates raw (YAML) and turns it into a Config.
func ParseConfig(path string, raw []byte) (*Config, error) {
	var fc FileConfig
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
		}
	}
	c := &Config{
		Path:           path,
		Raw:            raw,
		Backend:        fc.Backend,
		TPMDevice:      fc.TPM.Device,
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
		c.Register = *fc.Register
	}
	if fc.TPM.Timeout != "" {
		d, err := time.ParseDuration(fc.TPM.Timeout)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tpm.timeout: %v", ErrConfig, path, err)
		}
		c.TPMTimeout = d
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, path, err)
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

func (c *Config) validate() error {
	if CheckBackend(c.Backend) != nil {
		return fmt.Errorf("backend %q: want auto, tpm, snp, tdx or simulator", c.Backend)
	}
	if err := ValidateRegister(c.Register); err != nil {
		return err
	}
	if err := CheckTPMTimeout(c.TPMTimeout); err != nil {
		return fmt.Errorf("tpm.timeout %w", err)
	}
	for _, e := range c.Executors {
		if !filepath.IsAbs(e) {
			return fmt.Errorf("executor %q: path must be absolute", e)
		}
	}
	for _, p := range c.EncryptedPaths {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("storage.encrypted %q: path must be absolute", p)
		}
	}
	if c.ImageMetadata != "" && !filepath.IsAbs(c.ImageMetadata) {
		return fmt.Errorf("image_metadata %q: path must be absolute", c.ImageMetadata)
	}
	return nil
}

// ValidateRegister refuses PCRs that are out of range or resettable.
func ValidateRegister(pcr int) error {
	switch {
	case pcr < 0 || pcr > 23:
		return fmt.Errorf("register %d: PCR index must be 0..23", pcr)
	case pcr == 16 || pcr == 23:
		return fmt.Errorf("register %d: PCR 16 and 23 are resettable and cannot hold evidence", pcr)
	case pcr < 8:
		return fmt.Errorf("register %d: PCRs 0-7 belong to the firmware", pcr)
	}
	return nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
