package agent

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/scai"
	"github.com/attestd/attestd/verify"
)

// TestMain doubles as a client process for the peer-credential test: run
// with ATTESTD_TEST_CLIENT=socket it calls GetIdentity and prints the code.
func TestMain(m *testing.M) {
	if sock := os.Getenv("ATTESTD_TEST_CLIENT"); sock != "" {
		c, err := apiv1.Dial(sock)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(3)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch os.Getenv("ATTESTD_TEST_METHOD") {
		case "BindBuild":
			_, err = c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1"})
		default:
			_, err = c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
		}
		fmt.Println(status.Code(err).String())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve launches an agent on the simulator and serves it on a socket.
func serve(t testing.TB) (*Agent, string, *apiv1.Client) {
	t.Helper()
	return serveOn(t, newBackend(t, openSim(t)))
}

func serveOn(t testing.TB, b attest.Backend) (*Agent, string, *apiv1.Client) {
	t.Helper()
	return serveFixture(t, newFixture(t), b)
}

func serveFixture(t testing.TB, f *fixture, b attest.Backend) (*Agent, string, *apiv1.Client) {
	t.Helper()
	a := f.agent(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	if err := a.Launch(ctx); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(f.dir, "run")
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v after cancel; want nil", err)
		}
	})
	c, err := apiv1.Dial(SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return a, SocketPath(dir), c
}

// serveAllowing serves an agent on the simulator whose config is allow
// (YAML) and returns its socket.
func serveAllowing(t *testing.T, allow string) string {
	t.Helper()
	f := newFixture(t)
	cfg, err := ParseConfig("c.yaml", []byte(allow))
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	_, sock, _ := serveFixture(t, f, newBackend(t, openSim(t)))
	return sock
}

func TestServeOverSocket(t *testing.T) {
	a, sock, c := serve(t)
	ctx := context.Background()

	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode %v, want 0660", fi.Mode().Perm())
	}

	id, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	if err != nil {
		t.Fatalf("GetIdentity: %v", err)
	}
	kd := a.KeyDigest()
	if id.GetKeyDigest() != fmt.Sprintf("%x", kd[:]) || id.GetRegister() != "PCR13" || string(id.GetLaunchAttestation()) != string(a.LaunchAttestation()) {
		t.Errorf("identity = %v", id)
	}

	nonce := []byte("admission nonce 0001")
	resp, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: nonce})
	if err != nil {
		t.Fatalf("Attest: %v", err)
	}
	ak := a.backend.(interface{ AKPublic() crypto.PublicKey }).AKPublic()
	mustVerify(t, scai.AttestationLines(resp.GetEnvelope(), resp.GetEventLog(), resp.GetInclusionProof()), verify.Options{Nonce: nonce, TrustedAKs: []crypto.PublicKey{ak}})

	for _, tc := range []struct {
		name  string
		nonce []byte
		code  codes.Code
	}{
		{"empty nonce", nil, codes.InvalidArgument},
		{"65-byte nonce", make([]byte, 65), codes.InvalidArgument},
		{"oversized request", make([]byte, 2<<20), codes.ResourceExhausted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Attest(ctx, &apiv1.AttestRequest{Nonce: tc.nonce})
			if status.Code(err) != tc.code {
				t.Fatalf("got %v, want %v", err, tc.code)
			}
		})
	}

	log, err := c.GetEventLog(ctx, &apiv1.GetEventLogRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(log.GetEvents()) != 5 || log.GetEvents()[4].GetType() != "separator" || len(log.GetCel()) == 0 {
		t.Errorf("event log: %v", log.GetEvents())
	}

	hc := healthpb.NewHealthClient(c.Conn())
	h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "attestd.v1.Attestd"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", h, err)
	}
}

// TestCallerRoles connects as another uid (the tests run as root; CI
// too) and checks the roles the config gives it.
func TestCallerRoles(t *testing.T) {
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root (to run a client as another uid); CI runs as root")
		}
		t.Skip("needs root to run a client as another uid")
	}
	for _, tc := range []struct {
		name         string
		allow        string
		method, want string
	}{
		{"stranger reads", "", "GetIdentity", "PermissionDenied"},
		{"stranger binds", "", "BindBuild", "PermissionDenied"},
		{"reader reads", "allow: {readers: {uids: [65534]}}", "GetIdentity", "OK"},
		{"reader binds", "allow: {readers: {uids: [65534]}}", "BindBuild", "PermissionDenied"},
		{"executor binds", "allow: {executors: {gids: [65534]}}", "BindBuild", "OK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := serveAllowing(t, tc.allow)
			if got := runAs(t, sock, 65534, tc.method); got != tc.want {
				t.Fatalf("%s as uid 65534: %s, want %s", tc.method, got, tc.want)
			}
		})
	}
}

// runAs runs this test binary as a client with uid/gid id and returns the
// status code name it got for method.
func runAs(t *testing.T, sock string, id uint32, method string) string {
	t.Helper()
	// Let the other uid reach the socket so the daemon, not the file mode, decides.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	for dir := filepath.Dir(sock); dir != "/"; dir = filepath.Dir(dir) {
		os.Chmod(dir, 0o755) // t.TempDir parents are 0700
	}
	// The test binary lives in a 0700 build dir: copy it where the uid can run it.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(filepath.Dir(sock), "client.test")
	if err := os.WriteFile(client, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(client, "-test.run=^$")
	cmd.Env = append(os.Environ(), "ATTESTD_TEST_CLIENT="+sock, "ATTESTD_TEST_METHOD="+method)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: id, Gid: id}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid %d: %v\n%s", id, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestAllowlist(t *testing.T) {
	al := Allowlist{Readers: Principals{UIDs: []uint32{1001}, GIDs: []uint32{2002}}, Executors: Principals{UIDs: []uint32{3003}, GIDs: []uint32{4004}}, self: 999}
	for _, tc := range []struct {
		c    PeerCred
		want Role
	}{
		{PeerCred{UID: 0, GID: 0}, RoleExecutor},
		{PeerCred{UID: 999, GID: 5}, RoleExecutor},
		{PeerCred{UID: 1001, GID: 5}, RoleReader},
		{PeerCred{UID: 5, GID: 2002}, RoleReader},
		{PeerCred{UID: 3003, GID: 5}, RoleExecutor},
		{PeerCred{UID: 5, GID: 4004}, RoleExecutor},
		{PeerCred{UID: 5, GID: 5}, RoleNone},
	} {
		if got := al.Role(tc.c); got != tc.want {
			t.Errorf("Role(%+v) = %v, want %v", tc.c, got, tc.want)
		}
	}
}

func TestPIDReuseGuard(t *testing.T) {
	start := map[int32]uint64{42: 1000}
	st := func(pid int32) (uint64, error) {
		v, ok := start[pid]
		if !ok {
			return 0, os.ErrNotExist
		}
		return v, nil
	}
	c := PeerCred{PID: 42, UID: 0, StartTime: 1000}
	if err := checkSamePeer(c, st); err != nil {
		t.Fatalf("same process refused: %v", err)
	}
	start[42] = 2000 // the PID now belongs to another process
	if err := checkSamePeer(c, st); !errors.Is(err, errPeerGone) || status.Code(toStatus(err)) != codes.PermissionDenied {
		t.Fatalf("reused PID: %v", err)
	}
	delete(start, 42) // exited
	if err := checkSamePeer(c, st); !errors.Is(err, errPeerGone) {
		t.Fatalf("exited process: %v", err)
	}
	if got, err := procStartTime(int32(os.Getpid())); err != nil || got == 0 {
		t.Fatalf("procStartTime(self) = %d, %v", got, err)
	}
}

func TestListenLiveAndStaleSocket(t *testing.T) {
	dir := t.TempDir()
	ln, err := Listen(dir)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(dir); err == nil {
		t.Fatal("Listen succeeded over a live socket")
	}
	ln.(*socketListener).Listener.Close() // leaves a stale socket file behind, as a crash would
	if _, err := os.Stat(SocketPath(dir)); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}
	ln2, err := Listen(dir)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
}

func TestStatusCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("x: %w", errPermission), codes.PermissionDenied},
		{errNotLaunched, codes.FailedPrecondition},
		{context.Canceled, codes.Canceled},
		{errors.New("tpm exploded"), codes.Internal},
	} {
		if got := status.Code(toStatus(tc.err)); got != tc.want {
			t.Errorf("toStatus(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if msg := status.Convert(toStatus(errors.New("secret detail"))).Message(); msg == "secret detail" {
		t.Error("internal error details leak to callers")
	}
}

func TestPidfdGuard(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
	if err != nil {
		t.Skipf("pidfd_open unsupported by this kernel: %v", err)
	}
	c := PeerCred{PID: int32(cmd.Process.Pid), proc: &peerProcess{fd: fd}}
	defer c.proc.close()
	if err := checkSamePeer(c, nil); err != nil {
		t.Fatalf("running process refused: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := checkSamePeer(c, nil); !errors.Is(err, errPeerGone) {
		t.Fatalf("exited process: %v", err)
	}
}

func TestActivateCredentialErrors(t *testing.T) {
	_, _, c := serve(t) // the simulator has no EK certificate
	ctx := context.Background()
	if _, err := c.ActivateCredential(ctx, &apiv1.ActivateCredentialRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty challenge: %v", err)
	}
	_, err := c.ActivateCredential(ctx, &apiv1.ActivateCredentialRequest{CredentialBlob: []byte{0, 1, 2}, EncryptedSecret: []byte{0, 1, 2}})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("TPM without EK certificate: %v", err)
	}
}
