package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

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
}

// AuthType implements credentials.AuthInfo.
func (PeerCred) AuthType() string { return "peercred" }

// peerCredentials is gRPC transport credentials that read SO_PEERCRED at
// handshake. No encryption: the socket never leaves the machine.
type peerCredentials struct{}

var errNotUnix = errors.New("peer credentials need a unix socket")

func (peerCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
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
	return conn, PeerCred{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, nil
}

func (peerCredentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, PeerCred{}, nil
}

func (peerCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (p peerCredentials) Clone() credentials.TransportCredentials { return p }

func (peerCredentials) OverrideServerName(string) error { return nil }

// Allowlist admits callers by UID or primary GID. UID 0 and the daemon's own
// UID are always admitted.
type Allowlist struct {
	UIDs []uint32
	GIDs []uint32
	self uint32
}

// Allows reports whether c may call the API.
func (a Allowlist) Allows(c PeerCred) bool {
	return c.UID == 0 || c.UID == a.self || slices.Contains(a.UIDs, c.UID) || slices.Contains(a.GIDs, c.GID)
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
