package apiv1

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultSocket is where attestd serves unless told otherwise.
const DefaultSocket = "/run/attestd/attestd.sock"

// MaxResponseSize is the largest response attestd sends (its server's send
// limit) and the receive limit of this client. gRPC clients default to
// 4 MiB, which a response carrying the event log of a long build exceeds
// (the log may reach 40 MiB): clients written in other languages must raise
// their receive limit to this too (docs/integrating.md). The daemon's limits
// keep every response below it (docs/operating.md, "Limits").
const MaxResponseSize = 64 << 20

// Client is a connection to attestd's local API.
type Client struct {
	AttestdClient
	conn *grpc.ClientConn
}

// Dial connects to the attestd socket at path. The connection is made
// lazily; the first call reports an unreachable daemon.
func Dial(path string) (*Client, error) {
	conn, err := grpc.NewClient("passthrough:///attestd",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxResponseSize)),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", path, err)
	}
	return &Client{AttestdClient: NewAttestdClient(conn), conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Conn is the underlying connection, e.g. for the gRPC health service.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }
