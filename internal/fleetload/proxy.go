package fleetload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
)

// tripProxy sits between the replicas and PostgreSQL and counts round
// trips: a client write that follows a server write starts one (a pipelined
// batch is one trip; a prepare, then execute is two). It counts what the
// stores really send, whatever their SQL.
type tripProxy struct {
	ln     net.Listener
	dial   func(ctx context.Context) (net.Conn, error)
	trips  atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// startProxy listens on a unix socket in dir for the database dsn names and
// returns the proxy and the DSN that goes through it (dsn must be in
// keyword/value form; its host may be a socket directory or a TCP host).
func startProxy(dsn, dir string) (*tripProxy, string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, "", fmt.Errorf("parse the database DSN: %w", err)
	}
	network, addr := "tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
	if filepath.IsAbs(cfg.Host) {
		network, addr = "unix", filepath.Join(cfg.Host, ".s.PGSQL."+strconv.Itoa(int(cfg.Port)))
	}
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(int(cfg.Port))))
	if err != nil {
		return nil, "", fmt.Errorf("listen for the round-trip proxy: %w", err)
	}
	p := &tripProxy{ln: ln, conns: map[net.Conn]struct{}{}, dial: func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	p.wg.Go(p.accept)
	return p, dsn + " host=" + dir, nil
}

func (p *tripProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

// serve forwards one connection both ways until either side closes.
func (p *tripProxy) serve(client net.Conn) {
	server, err := p.dial(context.Background())
	if err != nil || !p.track(client, server) {
		client.Close()
		if server != nil {
			server.Close()
		}
		return
	}
	var serverSpoke atomic.Bool
	serverSpoke.Store(true)
	done := make(chan struct{}, 2)
	go func() {
		copyCounting(server, client, func() {
			if serverSpoke.Swap(false) {
				p.trips.Add(1)
			}
		})
		done <- struct{}{}
	}()
	go func() {
		copyCounting(client, server, func() { serverSpoke.Store(true) })
		done <- struct{}{}
	}()
	<-done
	client.Close()
	server.Close()
	<-done
	p.untrack(client, server)
}

// copyCounting copies src to dst, calling wrote before each write.
func copyCounting(dst io.Writer, src io.Reader, wrote func()) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			wrote()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *tripProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *tripProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

// Trips is the number of round trips so far.
func (p *tripProxy) Trips() int64 { return p.trips.Load() }

// close stops listening, cuts every connection and waits for the copies.
func (p *tripProxy) close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
