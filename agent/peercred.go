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
// reported it when the connection was made (SO_PEERCRED: the effective IDs
// at connect). Authorization uses UID and GID, and on every call the
// connecting process's current IDs as well (Allowlist.recheck), read through
// its PID only while a pidfd shows the PID still names that process.
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
// process that connected must still run (a zombie still counts: recheck
// catches it). A pidfd taken at connect answers that exactly; without one,
// the process with the caller's PID must have the start time recorded at
// connect.
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

// procCreds is what the per-call re-check reads from /proc/PID/status.
type procCreds struct {
	// UID and GID in the kernel's order: real, effective, saved set, file
	// system.
	UID, GID [4]uint32
	// Exited: the process has exited (a zombie waiting to be reaped, or
	// dead); its connection may live on in another process.
	Exited bool
}

// errProcStatus: a /proc/PID/status file this parser does not understand.
var errProcStatus = errors.New("malformed /proc/PID/status")

// parseProcStatus reads the State:, Uid: and Gid: lines of a
// /proc/PID/status file; each must appear exactly once.
func parseProcStatus(b []byte) (procCreds, error) {
	var p procCreds
	seen := map[string]bool{}
	for line := range bytes.Lines(b) {
		key, val, ok := strings.Cut(strings.TrimSuffix(string(line), "\n"), ":")
		if !ok || (key != "State" && key != "Uid" && key != "Gid") {
			continue
		}
		if seen[key] {
			return procCreds{}, fmt.Errorf("%w: %s: twice", errProcStatus, key)
		}
		seen[key] = true
		f := strings.Fields(val)
		if key == "State" {
			if len(f) == 0 || len(f[0]) != 1 {
				return procCreds{}, fmt.Errorf("%w: State: %q", errProcStatus, val)
			}
			p.Exited = f[0] == "Z" || f[0] == "X"
			continue
		}
		ids := &p.UID
		if key == "Gid" {
			ids = &p.GID
		}
		if len(f) != len(ids) {
			return procCreds{}, fmt.Errorf("%w: %s: want %d IDs, got %q", errProcStatus, key, len(ids), val)
		}
		for i, s := range f {
			v, err := strconv.ParseUint(s, 10, 32)
			if err != nil {
				return procCreds{}, fmt.Errorf("%w: %s: %v", errProcStatus, key, err)
			}
			ids[i] = uint32(v)
		}
	}
	if len(seen) != 3 {
		return procCreds{}, fmt.Errorf("%w: want one State:, Uid: and Gid: line each", errProcStatus)
	}
	return p, nil
}

// readProcCreds reads a process's current credentials. The caller must
// check afterwards that pid still names the process it means.
func readProcCreds(pid int32) (procCreds, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procCreds{}, err
	}
	p, err := parseProcStatus(b)
	if err != nil {
		return procCreds{}, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return p, nil
}

// roleNow is the role a process with credentials p has: the lowest of the
// roles of its real, effective, saved and file-system IDs (each uid with the
// gid of the same kind). Every identity the process holds must have the
// role: the real one started it (and may signal it), the saved one is what
// it can switch back to, the effective and file-system ones are what it acts
// as now. A process that has begun to drop to a less trusted identity has
// begun to hand itself over to it; one that only lowered its effective ID
// for a while can raise it again and call again.
func (a Allowlist) roleNow(p procCreds) Role {
	r := RoleExecutor
	for i := range p.UID {
		r = min(r, a.Role(PeerCred{UID: p.UID[i], GID: p.GID[i]}))
	}
	return r
}

// recheck refuses a call (errPermission) unless the process that connected
// still runs and its current credentials, read with read, give at least the
// role need. It fails closed: credentials that cannot be read, or a read that
// cannot be tied to the connecting process (no pidfd and no start time), are
// refused. attestd must therefore be able to read its callers'
// /proc/PID/status (the unit's ProtectProc=default; docs/threat-model.md).
func (a Allowlist) recheck(c PeerCred, method string, need Role, read func(pid int32) (procCreds, error), startTime func(int32) (uint64, error)) error {
	now, rerr := read(c.PID)
	// Only after the read: if the process that connected still runs now, it
	// ran during the read, so its PID named it and the read was of it.
	if err := checkSamePeer(c, startTime); err != nil {
		return err
	}
	if c.proc == nil && (startTime == nil || c.StartTime == 0) {
		return fmt.Errorf("%w: cannot tell whether pid %d is still the process that connected (no pidfd, no start time); reconnect", errPermission, c.PID)
	}
	if rerr != nil {
		return fmt.Errorf("%w: cannot re-check the credentials of pid %d (uid %d at connect): %v; attestd must be able to read its callers' /proc/PID/status", errPermission, c.PID, c.UID, rerr)
	}
	if now.Exited {
		return fmt.Errorf("%w: %w (pid %d)", errPermission, errPeerGone, c.PID)
	}
	if a.roleNow(now) < need {
		return fmt.Errorf("%w: pid %d connected as uid %d gid %d but now runs as uids %v gids %v (real, effective, saved, fs), not all of which may call %s", errPermission, c.PID, c.UID, c.GID, now.UID, now.GID, method)
	}
	return nil
}
