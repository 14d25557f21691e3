package fleetv1

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// ErrorDomain is the ErrorInfo domain of the service's refusals.
const ErrorDomain = "attestd.dev/fleet"

// MaxMessageSize is the client's send and receive limit: a completion
// bundle carries the build's whole event log. The server's own limit is
// its config's limits.max_request (docs/fleet.md).
const MaxMessageSize = 64 << 20

// Client is a connection to a fleet verifier replica.
type Client struct {
	FleetClient
	conn *grpc.ClientConn
}

// Dial connects to a replica at target: "unix:/path/to.sock" or
// "host:port" (plain gRPC; put TLS in front of it across hosts,
// docs/fleet.md). The connection is made lazily; the first call reports
// an unreachable replica.
func Dial(target string, opts ...grpc.DialOption) (*Client, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	}
	if path, ok := strings.CutPrefix(target, "unix:"); ok {
		base = append(base, grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
		target = "passthrough:///fleet"
	} else {
		target = "passthrough:///" + target
	}
	conn, err := grpc.NewClient(target, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return &Client{FleetClient: NewFleetClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, e.g. for the gRPC health service.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Reason is the named reason of a refusal from the service (its ErrorInfo
// in the fleet domain), or "" for any other error.
func Reason(err error) string {
	info := ErrorInfo(err)
	if info == nil {
		return ""
	}
	return info.GetReason()
}

// ErrorInfo is the fleet ErrorInfo of a refusal, or nil.
func ErrorInfo(err error) *errdetails.ErrorInfo {
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return nil
	}
	for _, d := range se.GRPCStatus().Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			return info
		}
	}
	return nil
}
