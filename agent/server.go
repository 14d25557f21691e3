package agent

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	apiv1 "github.com/attestd/attestd/agent/api/v1"
	"github.com/attestd/attestd/attest"
	"github.com/attestd/attestd/measure"
	"github.com/attestd/attestd/scai"
)

// maxRequestSize bounds incoming messages; the largest legitimate request is
// a few hundred bytes; build descriptors and statements make it larger.
const maxRequestSize = 1 << 20

// errPermission marks a caller that is not on the allowlist.
var errPermission = errors.New("caller not allowed")

// connBufferSize is the read and write buffer of one caller's connection.
const connBufferSize = 4 << 10

// Serve serves the API on ln until ctx is done, then stops gracefully.
// Cancellation is not an error.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	srv := grpc.NewServer(
		grpc.Creds(peerCredentials{startTime: a.opts.startTime}),
		grpc.MaxRecvMsgSize(maxRequestSize),
		grpc.MaxSendMsgSize(apiv1.MaxResponseSize),
		// Callers are local and few at a time; gRPC's 32 KiB read and write
		// buffers per connection would be most of the daemon's memory at
		// 64 connections (docs/performance.md).
		grpc.ReadBufferSize(connBufferSize),
		grpc.WriteBufferSize(connBufferSize),
		grpc.ForceServerCodecV2(newServerCodec()), // undecodable requests: see codec.go
		grpc.ChainUnaryInterceptor(a.authorize),
		grpc.ChainStreamInterceptor(a.authorizeStream),
	)
	srv.RegisterService(decodeChecked(&apiv1.Attestd_ServiceDesc), &service{a: a})
	hs := health.NewServer()
	a.health.setServer(hs)
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var failed error
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	case <-a.health.down:
		failed = a.health.err
	}
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(stopGrace):
		srv.Stop()
	}
	return failed
}

// stopGrace is how long calls in progress may take to finish at shutdown.
const stopGrace = 5 * time.Second

func (a *Agent) authorize(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := a.checkCaller(ctx, info.FullMethod); err != nil {
		return nil, toStatus(err)
	}
	if err := a.health.failure(); err != nil {
		return nil, toStatus(err)
	}
	resp, err := h(ctx, req)
	if err != nil {
		return nil, toStatus(a.logged(info.FullMethod, err))
	}
	return resp, nil
}

func (a *Agent) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := a.checkCaller(ss.Context(), info.FullMethod); err != nil {
		return toStatus(err)
	}
	return h(srv, ss)
}

// executorMethods change the environment's state; every other method needs
// only the reader role.
var executorMethods = map[string]bool{
	apiv1.Attestd_BindBuild_FullMethodName:     true,
	apiv1.Attestd_Extend_FullMethodName:        true,
	apiv1.Attestd_Complete_FullMethodName:      true,
	apiv1.Attestd_SignStatement_FullMethodName: true,
}

func (a *Agent) checkCaller(ctx context.Context, method string) error {
	c, ok := callerFrom(ctx)
	if !ok {
		return fmt.Errorf("%w: no peer credentials", errPermission)
	}
	need := RoleReader
	if executorMethods[method] {
		need = RoleExecutor
	}
	if a.allow.Role(c) < need {
		a.log.Warn("caller refused", "method", method, "uid", c.UID, "gid", c.GID, "pid", c.PID)
		what := "allow.readers or allow.executors"
		if need == RoleExecutor {
			what = "allow.executors"
		}
		return fmt.Errorf("%w: uid %d gid %d may not call %s (config: %s)", errPermission, c.UID, c.GID, method, what)
	}
	if err := a.allow.recheck(c, method, need, readProcCreds, a.opts.startTime); err != nil {
		a.log.Warn("caller refused", "method", method, "pid", c.PID, "err", err)
		return err
	}
	return nil
}

// logged logs internal errors (which are not shown to callers in full). A
// failed device is reported once, by the health monitor, not per call.
func (a *Agent) logged(method string, err error) error {
	if errors.Is(err, attest.ErrDeviceFailed) {
		return a.health.deviceFailed(err)
	}
	if code := statusCode(err); code == codes.Internal || code == codes.Unavailable {
		a.log.Error("request failed", "method", method, "err", err)
	}
	return err
}

// statusCode is the one place errors map to gRPC codes.
func statusCode(err error) codes.Code {
	switch {
	case errors.Is(err, attest.ErrNonceSize), errors.Is(err, attest.ErrBuildID),
		errors.Is(err, scai.ErrDescriptor), errors.Is(err, errInput):
		return codes.InvalidArgument
	case errors.Is(err, errPermission):
		return codes.PermissionDenied
	case errors.Is(err, errNotLaunched), errors.Is(err, errState), errors.Is(err, measure.ErrFrozen):
		return codes.FailedPrecondition
	case errors.Is(err, errLimit), errors.Is(err, measure.ErrLogFull):
		return codes.ResourceExhausted
	case errors.Is(err, attest.ErrDeviceFailed), errors.Is(err, errStorage),
		errors.Is(err, measure.ErrLogWrite), errors.Is(err, measure.ErrLogAhead):
		return codes.Unavailable
	case errors.Is(err, attest.ErrUnsupported):
		return codes.Unimplemented
	case errors.Is(err, attest.ErrChallenge):
		return codes.InvalidArgument
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	default:
		return codes.Internal
	}
}

// toStatus turns err into a gRPC status error; internal details are
// replaced by a generic message (they are logged instead).
func toStatus(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := statusCode(err)
	if code == codes.Internal {
		return status.Error(code, "internal error; see the attestd log")
	}
	return status.Error(code, err.Error())
}

type service struct {
	apiv1.UnimplementedAttestdServer
	a *Agent
}

func (s *service) GetIdentity(ctx context.Context, _ *apiv1.GetIdentityRequest) (*apiv1.GetIdentityResponse, error) {
	launch := s.a.launchAttestation()
	if launch == nil {
		return nil, errNotLaunched
	}
	ph, id := s.a.Phase()
	der, err := x509.MarshalPKIXPublicKey(s.a.backend.Signer().Public())
	if err != nil {
		return nil, fmt.Errorf("marshal env key: %w", err)
	}
	return &apiv1.GetIdentityResponse{
		PublicKey:         der,
		KeyDigest:         hex.EncodeToString(s.a.keyDigest[:]),
		Backends:          s.a.backendNames(),
		Register:          s.a.backend.Register().String(),
		LaunchAttestation: launch.Envelope,
		LaunchEventLog:    launch.EventLog,
		Version:           s.a.opts.Version,
		Phase:             ph,
		BuildId:           id,
	}, nil
}

func (s *service) Attest(ctx context.Context, req *apiv1.AttestRequest) (*apiv1.AttestResponse, error) {
	att, err := s.a.Attest(ctx, req.GetNonce())
	if err != nil {
		return nil, err
	}
	return &apiv1.AttestResponse{Envelope: att.Envelope, EventLog: att.EventLog, InclusionProof: att.Proof}, nil
}

func (s *service) GetEventLog(ctx context.Context, _ *apiv1.GetEventLogRequest) (*apiv1.GetEventLogResponse, error) {
	cel, recs := s.a.EventLog()
	resp := &apiv1.GetEventLogResponse{Cel: cel}
	for _, r := range recs {
		resp.Events = append(resp.Events, &apiv1.Event{
			Seq:      r.Seq,
			Register: fmt.Sprintf("%s%d", r.Kind, r.Index),
			Type:     r.Type.String(),
			Data:     r.Data,
			Sha256:   hex.EncodeToString(r.Digests[sha256Hash]),
			Digests:  digestMap(r.Digests),
		})
	}
	return resp, nil
}

// Listen creates the API socket in dir with mode 0660. A live socket already
// there (another daemon answers) is an error; a stale one is replaced.
func Listen(dir string) (net.Listener, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create runtime dir: %w", err)
	}
	path := filepath.Join(dir, SocketName)
	if _, err := os.Lstat(path); err == nil {
		c, derr := net.DialTimeout("unix", path, time.Second)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("another attestd is already serving on %s", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
	}
	// Bind and listen under a temporary name, set the mode, then rename:
	// the socket appears at its path only once it is listening with its
	// final mode, so a client that sees the file can connect.
	tmp := filepath.Join(dir, "."+SocketName+".new")
	os.Remove(tmp)
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o660); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("place socket: %w", err)
	}
	return &socketListener{Listener: ln, path: path}, nil
}

// socketListener removes its socket file when closed.
type socketListener struct {
	net.Listener
	path string
}

func (l *socketListener) Close() error {
	err := l.Listener.Close()
	os.Remove(l.path)
	return err
}

// SocketPath is the socket path inside dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

func (a *Agent) backendNames() []string {
	names := []string{a.backend.Name()}
	for _, e := range a.opts.Extra {
		names = append(names, e.Name())
	}
	return names
}

// digestMap names each digest by its algorithm, as in in-toto digest sets.
func digestMap(ds map[crypto.Hash][]byte) map[string]string {
	names := map[crypto.Hash]string{crypto.SHA1: "sha1", crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}
	out := make(map[string]string, len(ds))
	for h, d := range ds {
		if n, ok := names[h]; ok {
			out[n] = hex.EncodeToString(d)
		}
	}
	return out
}
