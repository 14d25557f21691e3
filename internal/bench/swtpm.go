package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// swtpmFactory manufactures one software TPM (swtpm_setup: EK and platform
// certificates from a local CA in its directory, SHA-256 bank only, as
// internal/swtpmtest does for tests) and starts fresh TPMs from copies of
// its state: every scenario gets a TPM that has just been powered on, with
// the same seeds, so the same AK.
type swtpmFactory struct {
	dir   string // the manufactured state and the CA
	state []byte // tpm2-00.permall
}

// ErrNoSwtpm: swtpm is not installed (scripts/install-deps.sh installs it).
var ErrNoSwtpm = errors.New("swtpm not installed: run scripts/install-deps.sh (make deps)")

// newSwtpmFactory runs swtpm_setup in a new directory under tmp.
func newSwtpmFactory(ctx context.Context, tmp string) (*swtpmFactory, error) {
	for _, bin := range []string{"swtpm", "swtpm_setup", "swtpm_localca"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%w (%s)", ErrNoSwtpm, bin)
		}
	}
	dir, err := os.MkdirTemp(tmp, "swtpm")
	if err != nil {
		return nil, err
	}
	state, ca := filepath.Join(dir, "state"), filepath.Join(dir, "ca")
	for _, d := range []string{state, ca} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	localca := filepath.Join(dir, "swtpm-localca.conf")
	opts := filepath.Join(dir, "swtpm-localca.options")
	setupConf := filepath.Join(dir, "swtpm_setup.conf")
	files := map[string]string{
		localca: fmt.Sprintf("statedir = %s\nsigningkey = %s\nissuercert = %s\ncertserial = %s\n",
			ca, filepath.Join(ca, "signkey.pem"), filepath.Join(ca, "issuercert.pem"), filepath.Join(ca, "certserial")),
		opts: "--platform-manufacturer attestd\n--platform-version 2.1\n--platform-model attestd-bench\n",
		setupConf: fmt.Sprintf("create_certs_tool = swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\nactive_pcr_banks = sha256\n",
			localca, opts),
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	setup := exec.CommandContext(ctx, "swtpm_setup", "--tpm2", "--tpmstate", state,
		"--create-ek-cert", "--create-platform-cert", "--pcr-banks", "sha256",
		"--config", setupConf, "--overwrite")
	setup.Env = append(os.Environ(), "XDG_CONFIG_HOME="+dir, "HOME="+dir)
	if out, err := setup.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("swtpm_setup: %v\n%s", err, out)
	}
	permall, err := os.ReadFile(filepath.Join(state, "tpm2-00.permall"))
	if err != nil {
		return nil, fmt.Errorf("read manufactured swtpm state: %w", err)
	}
	return &swtpmFactory{dir: dir, state: permall}, nil
}

// swtpm is one running software TPM.
type swtpm struct {
	Socket string // unix-io server socket (the TPM command protocol)
	dir    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// start runs a fresh swtpm on a copy of the manufactured state.
func (f *swtpmFactory) start(tmp string) (*swtpm, error) {
	// unix socket paths are limited to 108 bytes: tmp must be short.
	dir, err := os.MkdirTemp(tmp, "tpm")
	if err != nil {
		return nil, err
	}
	state := filepath.Join(dir, "state")
	if err := os.Mkdir(state, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(state, "tpm2-00.permall"), f.state, 0o600); err != nil {
		return nil, err
	}
	s := &swtpm{Socket: filepath.Join(dir, "tpm.sock"), dir: dir, exited: make(chan struct{})}
	s.cmd = exec.Command("swtpm", "socket", "--tpm2",
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+filepath.Join(dir, "ctrl.sock"),
		"--tpmstate", "dir="+state,
		"--flags", "not-need-init,startup-clear")
	logf, err := os.Create(filepath.Join(dir, "swtpm.log"))
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start swtpm: %w", err)
	}
	var waitErr error
	go func() { waitErr = s.cmd.Wait(); logf.Close(); close(s.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "swtpm.log"))
			return nil, fmt.Errorf("swtpm exited: %v\n%s", waitErr, log)
		default:
		}
		// The probe connection is closed at once; swtpm then accepts the
		// next one.
		if c, err := net.Dial("unix", s.Socket); err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, errors.New("swtpm did not open " + s.Socket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop ends swtpm and removes its directory.
func (s *swtpm) stop() {
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}
