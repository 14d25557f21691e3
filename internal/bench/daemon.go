package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

// buildAttestd builds cmd/attestd of the module at root into dir as the
// runner image ships it (images/bake.sh: CGO_ENABLED=0, -trimpath; the
// in-process simulator, the only part that needs cgo, is not used here),
// with build tags when given (attestd_demo_fakes for the SEV-SNP / TDX
// fakes).
func buildAttestd(ctx context.Context, root, dir, name string, tags ...string) (string, error) {
	out := filepath.Join(dir, name)
	args := []string{"build", "-trimpath", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, "./cmd/attestd")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/attestd: %v\n%s", err, b)
	}
	return out, nil
}

// daemonConfig says how to run one attestd.
type daemonConfig struct {
	Binary     string
	RuntimeDir string   // must not exist yet, or be empty
	WorkDir    string   // config, image identity, notify socket, log
	Backend    string   // tpm, snp, tdx
	TPMDevice  string   // "unix:/path" for tpm
	Executors  []string // measured at launch
	Env        []string // added to the environment
}

// daemon is a running attestd.
type daemon struct {
	cfg    daemonConfig
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // of cmd.Wait, once exited is closed
	// Ready is the time from exec to READY=1.
	Ready time.Duration
	// Files are the files attestd measures at launch (its binary, the
	// config, the image identity, the executors).
	Files  []string
	Socket string
}

// startDaemon writes a config and starts attestd, waiting for READY=1 on a
// notify socket of its own, as systemd would.
func startDaemon(ctx context.Context, cfg daemonConfig) (*daemon, error) {
	image := filepath.Join(cfg.WorkDir, "image.json")
	if err := os.WriteFile(image, []byte(`{"name": "bench-runner", "version": "1"}`+"\n"), 0o644); err != nil {
		return nil, err
	}
	var conf bytes.Buffer
	fmt.Fprintf(&conf, "backend: %s\n", cfg.Backend)
	if cfg.TPMDevice != "" {
		fmt.Fprintf(&conf, "tpm:\n  device: %s\n", cfg.TPMDevice)
	}
	fmt.Fprintf(&conf, "register: 13\nimage_metadata: %s\n", image)
	fmt.Fprintf(&conf, "executors: [%s]\n", strings.Join(cfg.Executors, ", "))
	fmt.Fprintf(&conf, "allow:\n  executors: {uids: [%d]}\n", os.Getuid())
	confPath := filepath.Join(cfg.WorkDir, "config.yaml")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		return nil, err
	}

	notifyPath := filepath.Join(cfg.WorkDir, "notify.sock")
	os.Remove(notifyPath)
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("notify socket: %w", err)
	}
	defer notify.Close()

	logf, err := os.Create(filepath.Join(cfg.WorkDir, "attestd.log"))
	if err != nil {
		return nil, err
	}
	d := &daemon{
		cfg:    cfg,
		exited: make(chan struct{}),
		Files:  append([]string{cfg.Binary, confPath, image}, cfg.Executors...),
		Socket: filepath.Join(cfg.RuntimeDir, "attestd.sock"),
	}
	d.cmd = exec.Command(cfg.Binary, "--config", confPath, "--runtime-dir", cfg.RuntimeDir)
	d.cmd.Env = append(daemonEnv(), "NOTIFY_SOCKET="+notifyPath)
	d.cmd.Env = append(d.cmd.Env, cfg.Env...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf

	ready := make(chan error, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := notify.Read(buf)
			if err != nil {
				ready <- err
				return
			}
			for _, l := range strings.Split(string(buf[:n]), "\n") {
				if l == "READY=1" {
					ready <- nil
					return
				}
			}
		}
	}()
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start attestd: %w", err)
	}
	go func() { d.err = d.cmd.Wait(); logf.Close(); close(d.exited) }()
	select {
	case err := <-ready:
		if err != nil {
			d.stop()
			return nil, fmt.Errorf("attestd notify socket: %w", err)
		}
		d.Ready = time.Since(start)
	case <-d.exited:
		return nil, fmt.Errorf("attestd exited before READY=1: %v\n%s", d.err, d.logTail())
	case <-time.After(5 * time.Minute):
		d.stop()
		return nil, fmt.Errorf("attestd not ready after 5 minutes\n%s", d.logTail())
	case <-ctx.Done():
		d.stop()
		return nil, ctx.Err()
	}
	return d, nil
}

// daemonEnv is the benchmark's environment without systemd's variables,
// which would send the daemon's notifications elsewhere or arm a watchdog.
func daemonEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "RUNTIME_DIRECTORY":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// client dials the daemon's socket.
func (d *daemon) client() (*apiv1.Client, error) { return apiv1.Dial(d.Socket) }

// stop ends the daemon with SIGTERM, as systemd does.
func (d *daemon) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.cfg.WorkDir, "attestd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// memory is what /proc/PID/status says about the daemon's memory.
type memory struct {
	RSS, HWM int64 // VmRSS, VmHWM in bytes
}

func (d *daemon) memory() (memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return memory{}, err
	}
	defer f.Close()
	var m memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return memory{}, fmt.Errorf("/proc status %s: %q", k, v)
		}
		n, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return memory{}, err
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.HWM = n << 10
		}
	}
	if m.RSS == 0 {
		return memory{}, errors.New("no VmRSS in /proc status")
	}
	return m, sc.Err()
}
