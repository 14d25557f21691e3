package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
)

func TestParseProcStatus(t *testing.T) {
	const head = "Name:\tsh\nUmask:\t0022\n"
	for _, tc := range []struct {
		name    string
		in      string
		want    procCreds
		wantErr bool
	}{
		{"running", head + "State:\tS (sleeping)\nTgid:\t7\nUid:\t1001\t1002\t1003\t1004\nGid:\t2001\t2002\t2003\t2004\nGroups:\t27 100\n",
			procCreds{UID: [4]uint32{1001, 1002, 1003, 1004}, GID: [4]uint32{2001, 2002, 2003, 2004}}, false},
		{"zombie", "State:\tZ (zombie)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{Exited: true}, false},
		{"dead", "State:\tX (dead)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{Exited: true}, false},
		{"no trailing newline", "State:\tR (running)\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t5", procCreds{GID: [4]uint32{0, 0, 0, 5}}, false},
		{"no Uid", "State:\tR (running)\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"no State", "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"three uids", "State:\tR\nUid:\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"uid too large", "State:\tR\nUid:\t4294967296\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"negative uid", "State:\tR\nUid:\t-1\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"Uid twice", "State:\tR\nUid:\t0\t0\t0\t0\nUid:\t5\t5\t5\t5\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"empty State", "State:\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", procCreds{}, true},
		{"empty", "", procCreds{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStatus([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, errProcStatus) {
					t.Fatalf("got %+v, %v; want errProcStatus", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
	self, err := readProcCreds(int32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if self.UID[1] != uint32(os.Geteuid()) || self.GID[1] != uint32(os.Getegid()) || self.Exited {
		t.Errorf("readProcCreds(self) = %+v", self)
	}
}

func FuzzParseProcStatus(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("Name:\tx\nState:\tZ (zombie)\nUid:\t0\t1\t2\t3\nGid:\t4\t5\t6\t7\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseProcStatus(b)
		if err != nil {
			if !errors.Is(err, errProcStatus) {
				t.Fatalf("error %v is not errProcStatus", err)
			}
			if p != (procCreds{}) {
				t.Fatalf("error %v with credentials %+v", err, p)
			}
		}
	})
}

func TestRoleNow(t *testing.T) {
	al := Allowlist{Readers: Principals{UIDs: []uint32{1001}}, Executors: Principals{UIDs: []uint32{3003}, GIDs: []uint32{4004}}, self: 999}
	ids := func(u0, u1, u2, u3 uint32) [4]uint32 { return [4]uint32{u0, u1, u2, u3} }
	for _, tc := range []struct {
		name string
		p    procCreds
		want Role
	}{
		{"root", procCreds{}, RoleExecutor},
		{"executor", procCreds{UID: ids(3003, 3003, 3003, 3003), GID: ids(5, 5, 5, 5)}, RoleExecutor},
		{"executor by gid", procCreds{UID: ids(5, 5, 5, 5), GID: ids(4004, 4004, 4004, 4004)}, RoleExecutor},
		{"reader", procCreds{UID: ids(1001, 1001, 1001, 1001), GID: ids(5, 5, 5, 5)}, RoleReader},
		{"root, effective uid a reader", procCreds{UID: ids(0, 1001, 0, 1001)}, RoleReader},
		{"root, saved uid a stranger", procCreds{UID: ids(0, 0, 5, 0), GID: ids(5, 5, 5, 5)}, RoleNone},
		{"setuid root run by a stranger", procCreds{UID: ids(5, 0, 0, 0), GID: ids(5, 5, 5, 5)}, RoleNone},
		{"fs uid a stranger", procCreds{UID: ids(3003, 3003, 3003, 5), GID: ids(5, 5, 5, 5)}, RoleNone},
		{"uid a stranger, every gid an executor group", procCreds{UID: ids(5, 5, 5, 5), GID: ids(4004, 4004, 4004, 4004)}, RoleExecutor},
		{"uid a stranger, effective gid dropped", procCreds{UID: ids(5, 5, 5, 5), GID: ids(4004, 5, 4004, 5)}, RoleNone},
	} {
		if got := al.roleNow(tc.p); got != tc.want {
			t.Errorf("%s: roleNow(%+v) = %v, want %v", tc.name, tc.p, got, tc.want)
		}
	}
}

// TestRecheckFailsClosed: the re-check refuses what it cannot read or
// cannot tie to the connecting process.
func TestRecheckFailsClosed(t *testing.T) {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		t.Skipf("pidfd_open unsupported by this kernel: %v", err)
	}
	running := PeerCred{PID: int32(os.Getpid()), proc: &peerProcess{fd: fd}}
	defer running.proc.close()
	al := Allowlist{Readers: Principals{UIDs: []uint32{1001}}}
	creds := func(p procCreds, err error) func(int32) (procCreds, error) {
		return func(int32) (procCreds, error) { return p, err }
	}
	reader := procCreds{UID: [4]uint32{1001, 1001, 1001, 1001}}
	for _, tc := range []struct {
		name      string
		c         PeerCred
		read      func(int32) (procCreds, error)
		startTime func(int32) (uint64, error)
		need      Role
		want      error // nil, errPermission or errPeerGone
	}{
		{"root", running, creds(procCreds{}, nil), nil, RoleExecutor, nil},
		{"reader reads", running, creds(reader, nil), nil, RoleReader, nil},
		{"reader binds", running, creds(reader, nil), nil, RoleExecutor, errPermission},
		{"hidden by ProtectProc=invisible", running, creds(procCreds{}, os.ErrNotExist), nil, RoleReader, errPermission},
		{"unreadable", running, creds(procCreds{}, os.ErrPermission), nil, RoleReader, errPermission},
		{"zombie", running, creds(procCreds{Exited: true}, nil), nil, RoleReader, errPeerGone},
		{"no pidfd or start time", PeerCred{PID: running.PID}, creds(procCreds{}, nil), procStartTime, RoleReader, errPermission},
		{"no pidfd but same start time", PeerCred{PID: 42, StartTime: 7}, creds(procCreds{}, nil), func(int32) (uint64, error) { return 7, nil }, RoleReader, nil},
		{"no pidfd and PID reused", PeerCred{PID: 42, StartTime: 7}, creds(procCreds{}, nil), func(int32) (uint64, error) { return 8, nil }, RoleReader, errPeerGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := al.recheck(tc.c, "/m", tc.need, tc.read, tc.startTime)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("got %v, want %v", err, tc.want)
			case err != nil && status.Code(toStatus(err)) != codes.PermissionDenied:
				t.Fatalf("%v maps to %v, want PermissionDenied", err, status.Code(toStatus(err)))
			}
		})
	}
}

// needRoot skips (or, in CI, fails) a test that must change credentials.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root (to change a client's credentials); CI runs as root")
		}
		t.Skip("needs root to change a client's credentials")
	}
}

// helper runs this test binary as a helper process (TestPeerHelperProcess)
// in mode with env.
func helper(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestPeerHelperProcess$")
	cmd.Env = append(append(os.Environ(), "ATTESTD_PEER_HELPER="+mode), env...)
	return cmd
}

// TestPeerHelperProcess is not a test: it is the client process of
// TestCredentialsChangeAfterConnect and TestConnectionHandedOn.
func TestPeerHelperProcess(t *testing.T) {
	var err error
	switch os.Getenv("ATTESTD_PEER_HELPER") {
	case "":
		t.Skip("helper process")
	case "setuid":
		err = setuidClient(os.Getenv("ATTESTD_TEST_SOCK"), os.Getenv("ATTESTD_TEST_SETRESGID"), os.Getenv("ATTESTD_TEST_SETRESUID"))
	case "lend":
		err = lendConnection(os.Getenv("ATTESTD_TEST_SOCK"), os.NewFile(3, "socketpair"))
	default:
		err = errors.New("unknown helper mode")
	}
	if err != nil {
		fmt.Println("helper:", err)
		os.Exit(3)
	}
	os.Exit(0)
}

// setuidClient connects as it was started (root), calls GetIdentity, changes
// its credentials to the real, effective and saved IDs in gids and uids
// ("r,e,s"; empty: unchanged), then calls GetIdentity and BindBuild on the
// same connection. It prints the three status codes.
func setuidClient(sock, gids, uids string) error {
	c, err := apiv1.Dial(sock)
	if err != nil {
		return err
	}
	ctx := context.Background()
	_, err = c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	fmt.Println(status.Code(err))
	if gids != "" {
		var r, e, s int
		if _, err := fmt.Sscanf(gids, "%d,%d,%d", &r, &e, &s); err != nil {
			return err
		}
		if err := syscall.Setresgid(r, e, s); err != nil {
			return fmt.Errorf("setresgid: %w", err)
		}
	}
	if uids != "" {
		var r, e, s int
		if _, err := fmt.Sscanf(uids, "%d,%d,%d", &r, &e, &s); err != nil {
			return err
		}
		if err := syscall.Setresuid(r, e, s); err != nil {
			return fmt.Errorf("setresuid: %w", err)
		}
	}
	_, err = c.GetIdentity(ctx, &apiv1.GetIdentityRequest{})
	fmt.Println(status.Code(err))
	_, err = c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1"})
	fmt.Println(status.Code(err))
	return nil
}

// TestCredentialsChangeAfterConnect: a client connects as root, then changes
// its credentials; its next call on the same connection gets the role of
// what it runs as now (never more than at connect).
func TestCredentialsChangeAfterConnect(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name       string
		allow      string
		gids, uids string
		want       string // GetIdentity before; GetIdentity and BindBuild after
	}{
		{"root stays root", "", "", "", "OK OK OK"},
		{"to a stranger", "", "", "65534,65534,65534", "OK PermissionDenied PermissionDenied"},
		{"to a reader", "allow: {readers: {uids: [65534]}}", "", "65534,65534,65534", "OK OK PermissionDenied"},
		{"to an executor", "allow: {executors: {uids: [65534]}}", "", "65534,65534,65534", "OK OK OK"},
		{"effective uid only", "", "", "0,65534,0", "OK PermissionDenied PermissionDenied"},
		{"saved uid only", "", "", "0,0,65534", "OK PermissionDenied PermissionDenied"},
		{"uid dropped but gid in executors", "allow: {executors: {gids: [0]}}", "", "65534,65534,65534", "OK OK OK"},
		{"uid and gid dropped", "allow: {executors: {gids: [0]}}", "65534,65534,65534", "65534,65534,65534", "OK PermissionDenied PermissionDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := serveAllowing(t, tc.allow)
			cmd := helper("setuid", "ATTESTD_TEST_SOCK="+sock, "ATTESTD_TEST_SETRESGID="+tc.gids, "ATTESTD_TEST_SETRESUID="+tc.uids)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("client: %v\n%s", err, out)
			}
			if got := strings.Join(strings.Fields(string(out)), " "); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// lendConnection connects to sock, waits until the daemon has taken the
// connection (its HTTP/2 settings arrive, which it sends after reading the
// peer credentials), passes the connection over sp with SCM_RIGHTS, then
// lives until its stdin closes.
func lendConnection(sock string, sp *os.File) error {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	raw, err := conn.(*net.UnixConn).File()
	if err != nil {
		return err
	}
	conn.Close()
	for {
		_, _, err = unix.Recvfrom(int(raw.Fd()), make([]byte, 1), unix.MSG_PEEK)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("wait for the daemon: %w", err)
	}
	if err := unix.Sendmsg(int(sp.Fd()), []byte{0}, unix.UnixRights(int(raw.Fd())), nil, 0); err != nil {
		return fmt.Errorf("send the connection: %w", err)
	}
	raw.Close()
	io.Copy(io.Discard, os.Stdin)
	return nil
}

// receiveConn receives a connection sent with SCM_RIGHTS on sp.
func receiveConn(t *testing.T, sp int) net.Conn {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(sp, make([]byte, 1), oob, 0)
	if err != nil {
		t.Fatalf("receive the connection: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("control messages %v: %v", msgs, err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		t.Fatalf("rights %v: %v", fds, err)
	}
	f := os.NewFile(uintptr(fds[0]), "lent connection")
	defer f.Close()
	conn, err := net.FileConn(f)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// TestConnectionHandedOn: a root client connects and passes its connection
// to another process (here the test itself) with SCM_RIGHTS. While the
// connecting process lives, calls on the connection have its role (the
// documented limit: docs/threat-model.md); once it has exited, zombie or
// reaped, they are refused.
func TestConnectionHandedOn(t *testing.T) {
	needRoot(t)
	_, sock, _ := serve(t)
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	lenderEnd := os.NewFile(uintptr(sp[1]), "socketpair")
	cmd := helper("lend", "ATTESTD_TEST_SOCK="+sock)
	cmd.ExtraFiles = []*os.File{lenderEnd}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lenderEnd.Close()
	reaped := false
	defer func() {
		if !reaped {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()

	conn := receiveConn(t, sp[0])
	lent, err := grpc.NewClient("passthrough:///attestd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) {
			if conn == nil {
				return nil, errors.New("the lent connection is gone")
			}
			c := conn
			conn = nil
			return c, nil
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer lent.Close()
	c := apiv1.NewAttestdClient(lent)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard, not a timing assertion
	defer cancel()

	if _, err := c.BindBuild(ctx, &apiv1.BindBuildRequest{BuildId: "build-1"}); err != nil {
		t.Fatalf("lender alive: BindBuild: %v, want OK (the lender's role)", err)
	}

	stdin.Close()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("lender exited, not reaped: %v, want PermissionDenied", err)
	}

	reaped = true
	if err := cmd.Wait(); err != nil {
		t.Fatalf("lender: %v\n%s", err, out.String())
	}
	if _, err := c.GetIdentity(ctx, &apiv1.GetIdentityRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("lender exited and reaped: %v, want PermissionDenied", err)
	}
	if s := strings.TrimSpace(out.String()); s != "" {
		t.Logf("lender output: %s", strconv.Quote(s))
	}
}
