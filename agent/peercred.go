package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerCred is the identity of a caller on the unix socket as the kernel
// reported it when the connection was made (SO_PEERCRED). Authorization uses
// only UID and GID, which are fixed at connect time, never the PID (which
// can be reused once the caller exits).
type PeerCred struct {
	PID int32
	UID uint32
	GID uint32
	// StartTime is the connecting process's start time (clock ticks since
	// boot, /proc/PID/stat field 22) at connect; 0 if unknown.
	StartTime uint64

	proc *peerProcess // a pidfd of the connecting process, if one could be opened
}

// peerProcess holds a pidfd for the connecting process: unlike a PID it
// cannot come to name another process. It is closed with the connection.
type peerProcess struct {
	once sync.Once
	fd   int
}

// alive reports whether the process the pidfd names still runs. Signal 0
// only checks: ESRCH means it exited, EPERM that it runs as someone else.
func (p *peerProcess) alive() bool {
	err := unix.PidfdSendSignal(p.fd, 0, nil, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

func (p *peerProcess) close() { p.once.Do(func() { unix.Close(p.fd) }) }

// procConn closes the peer's pidfd with the connection.
type procConn struct {
	net.Conn
	proc *peerProcess
}

func (c *procConn) Close() error {
	c.proc.close()
	return c.Conn.Close()
}

// AuthType implements credentials.AuthInfo.
func (PeerCred) AuthType() string { return "peercred" }

// peerCredentials is gRPC transport credentials that read SO_PEERCRED at
// handshake. No encryption: the socket never leaves the machine.
type peerCredentials struct {
	startTime func(pid int32) (uint64, error)
}

var errNotUnix = errors.New("peer credentials need a unix socket")

func (p peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, errNotUnix
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return nil, nil, fmt.Errorf("peer credentials: %w", serr)
	}
	pc := PeerCred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}
	if p.startTime != nil {
		// Best effort: a process that already exited is caught per call.
		pc.StartTime, _ = p.startTime(cred.Pid)
	}
	if fd, err := unix.PidfdOpen(int(cred.Pid), 0); err == nil {
		pc.proc = &peerProcess{fd: fd}
		return &procConn{Conn: conn, proc: pc.proc}, pc, nil
	}
	return conn, pc, nil
}

func (peerCredentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, PeerCred{}, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }

// Role is what a caller may do.
type Role int

// Roles, each including the ones before it.
const (
	RoleNone     Role = iota
	RoleReader        // identity, attestations, event log, bundle, health
	RoleExecutor      // also the build lifecycle
)

// Allowlist assigns roles by uid or primary gid. uid 0 and the daemon's
// own uid are executors: they can reach the TPM anyway.
type Allowlist struct {
	Readers   Principals
	Executors Principals
	self      uint32
}

func (p Principals) has(c PeerCred) bool {
	return slices.Contains(p.UIDs, c.UID) || slices.Contains(p.GIDs, c.GID)
}

// Role returns what c may do.
func (a Allowlist) Role(c PeerCred) Role {
	switch {
	case c.UID == 0 || c.UID == a.self || a.Executors.has(c):
		return RoleExecutor
	case a.Readers.has(c):
		return RoleReader
	default:
		return RoleNone
	}
}

// callerFrom returns the peer credentials of the caller of ctx.
func callerFrom(ctx context.Context) (PeerCred, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return PeerCred{}, false
	}
	c, ok := p.AuthInfo.(PeerCred)
	return c, ok
}

// errPeerGone: the process that connected has exited (its PID may be
// reused, or its socket passed on to another process).
var errPeerGone = errors.New("the connecting process has exited; reconnect")

// procStartTime reads a process's start time from /proc/PID/stat.
func procStartTime(pid int32) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return strconv.ParseUint(f[19], 10, 64) // field 22
}

// checkSamePeer guards against PID reuse between connect and call: the
// process that connected must still run. A pidfd taken at connect answers
// that exactly (and needs no /proc access, which ProtectProc=invisible
// takes away); without one, the process with the caller's PID must have the
// start time recorded at connect.
func checkSamePeer(c PeerCred, startTime func(int32) (uint64, error)) error {
	if c.proc != nil {
		if !c.proc.alive() {
			return fmt.Errorf("%w: %w (pid %d)", errPermission, errPeerGone, c.PID)
		}
		return nil
	}
	if startTime == nil || c.StartTime == 0 {
		return nil
	}
	now, err := startTime(c.PID)
	if err != nil || now != c.StartTime {
		return fmt.Errorf("%w: %w (pid %d)", errPermission, errPeerGone, c.PID)
	}
	return nil
}
