// Package tpmfault is a fault-injecting proxy for the TPM command protocol,
// for tests: it listens on a unix socket, forwards each client connection to
// a swtpm unix socket over a connection of its own, and can be told at run
// time to drop, delay, corrupt or cut off responses, to keep a command from
// the TPM, or to play a TPM that died.
//
//	p := tpmfault.Start(t, swtpmSocket) // the client uses "unix:"+p.Socket()
//	hit := p.Next(tpmfault.Corrupt.On(tpmfault.CCQuote))
//	… // <-hit says when, and which command
//	p.Every(tpmfault.Drop) // a hung TPM
//	p.Kill()               // a dead one
//
// The proxy is frame-aware: a TPM command or response is a 10-byte header
// (tag u16, size u32, code u32, big-endian) followed by size-10 bytes, and
// the proxy forwards one whole command, then one whole response.
//
// Test-only: it imports "testing" and must never be imported by non-test
// code.
package tpmfault

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// headerSize is the TPM command and response header: tag, size, code.
const headerSize = 10

// maxFrame bounds a command or response (a TPM's are a few KiB).
const maxFrame = 1 << 20

// Config says where the proxy listens and what it forwards to.
type Config struct {
	// Socket is the unix socket the proxy listens on (created; must not
	// exist). Clients pass "unix:"+Socket as their TPM device.
	Socket string
	// Upstream is the swtpm unix-io server socket.
	Upstream string
}

// Proxy forwards the TPM command protocol and injects faults into
// responses. Its methods are safe for concurrent use.
type Proxy struct {
	cfg Config
	ln  net.Listener
	wg  sync.WaitGroup

	mu     sync.Mutex
	armed  *arming
	dead   bool // Kill was called
	closed bool
	links  map[*link]struct{}
	hits   []Hit
	stats  Stats
}

// Stats counts what went through the proxy.
type Stats struct {
	Conns     int // client connections accepted
	Commands  int // commands forwarded to the TPM
	Responses int // responses sent on to clients (faulted or not), counted as the write starts
}

// New listens on cfg.Socket and forwards to cfg.Upstream. Close stops it.
func New(cfg Config) (*Proxy, error) {
	if cfg.Socket == "" || cfg.Upstream == "" {
		return nil, errors.New("tpmfault: Socket and Upstream are required")
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("tpmfault: listen: %w", err)
	}
	p := &Proxy{cfg: cfg, ln: ln, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Start runs a proxy to the swtpm socket upstream on a socket in a fresh
// temp directory (short, for the unix socket path limit); it stops in
// t.Cleanup.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpmfault")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Socket: filepath.Join(dir, "tpm.sock"), Upstream: upstream})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		os.RemoveAll(dir)
	})
	return p
}

// Socket is the path clients connect to.
func (p *Proxy) Socket() string { return p.cfg.Socket }

// Next applies f to the next response (Hold: command) that f matches (see
// Fault.On and Fault.Skip), once. The channel receives the Hit when that
// happens. It replaces any fault armed before.
func (p *Proxy) Next(f Fault) <-chan Hit { return p.arm(f, false) }

// Every applies f to every response (Hold: command) f matches from now
// on, after any Skip, until Heal or another Next or Every. The channel
// receives the first Hit.
func (p *Proxy) Every(f Fault) <-chan Hit { return p.arm(f, true) }

// Heal disarms the armed fault. A killed TPM stays dead.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = nil
}

// Kill plays a TPM that died: every client connection and its TPM
// connection are closed now, and connections made later are closed as soon
// as they are accepted. It cannot be undone.
func (p *Proxy) Kill() Hit {
	p.mu.Lock()
	p.dead = true
	h := Hit{Fault: Fault{kind: kill}, At: time.Now()}
	p.hits = append(p.hits, h)
	links := p.linksLocked()
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
	return h
}

// Hits lists every fault applied so far, in order.
func (p *Proxy) Hits() []Hit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Hit(nil), p.hits...)
}

// Stats returns the counts so far.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := p.linksLocked()
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) linksLocked() []*link {
	out := make([]*link, 0, len(p.links))
	for l := range p.links {
		out = append(out, l)
	}
	return out
}

// arming is an armed fault.
type arming struct {
	fault Fault
	every bool
	skip  int      // matches still to let through
	hit   chan Hit // buffered 1: the first hit
	fired bool
}

func (p *Proxy) arm(f Fault, every bool) <-chan Hit {
	a := &arming{fault: f, every: every, skip: f.skip, hit: make(chan Hit, 1)}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = a
	return a.hit
}

// take returns the fault to apply to command cmd (atCommand: before it
// is forwarded; else to its response), if any.
func (p *Proxy) take(cmd Command, atCommand bool) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.armed
	if a == nil || (a.fault.cmd != 0 && a.fault.cmd != cmd) || (a.fault.kind == hold) != atCommand {
		return Fault{}, false
	}
	if a.skip > 0 {
		a.skip--
		return Fault{}, false
	}
	if !a.every {
		p.armed = nil
	}
	h := Hit{Fault: a.fault, Command: cmd, At: time.Now()}
	p.hits = append(p.hits, h)
	if !a.fired {
		a.fired = true
		a.hit <- h
	}
	return a.fault, true
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		l := &link{down: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed || p.dead {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.links[l] = struct{}{}
		p.stats.Conns++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(l)
	}
}

// link is one client connection and its own TPM connection.
type link struct {
	down, up  net.Conn
	mu        sync.Mutex
	closeOnce sync.Once
	done      chan struct{} // closed by close
}

func (l *link) setUp(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		return false
	default:
	}
	l.up = c
	return true
}

func (l *link) close() {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		close(l.done)
		l.down.Close()
		if l.up != nil {
			l.up.Close()
		}
	})
}

// serve forwards one command, then one response, until either side closes
// or a fault ends the connection.
func (p *Proxy) serve(l *link) {
	defer p.wg.Done()
	defer func() {
		l.close()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	up, err := net.Dial("unix", p.cfg.Upstream)
	if err != nil || !l.setUp(up) {
		if up != nil {
			up.Close()
		}
		return
	}
	for {
		cmd, err := readFrame(l.down)
		if err != nil {
			return
		}
		code := Command(binary.BigEndian.Uint32(cmd[6:10]))
		if _, ok := p.take(code, true); ok {
			continue // hold: the TPM never sees it
		}
		if _, err := up.Write(cmd); err != nil {
			return
		}
		p.count(func(s *Stats) { s.Commands++ })
		resp, err := readFrame(up)
		if err != nil {
			return
		}
		f, ok := p.take(code, false)
		if !ok {
			f = Fault{}
		}
		switch f.kind {
		case drop:
			continue
		case delay:
			t := time.NewTimer(f.delay)
			select {
			case <-t.C:
			case <-l.done:
				t.Stop()
				return
			}
		case corruptBody:
			resp = corruptResponseBody(resp)
		case corruptHeader:
			resp = corruptResponseSize(resp)
		case closeConn:
			return
		}
		// Counted before the write, so that a client holding the response
		// sees it counted (Stats right after a read is exact).
		p.count(func(s *Stats) { s.Responses++ })
		if _, err := l.down.Write(resp); err != nil {
			return
		}
	}
}

func (p *Proxy) count(f func(*Stats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.stats)
}

// readFrame reads one whole command or response.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [headerSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < headerSize || size > maxFrame {
		return nil, fmt.Errorf("tpmfault: frame size %d out of range", size)
	}
	b := make([]byte, size)
	copy(b, hdr[:])
	if _, err := io.ReadFull(r, b[headerSize:]); err != nil {
		return nil, err
	}
	return b, nil
}

// corruptResponseBody flips every bit of the byte in the middle of the body;
// a response without a body gets the last byte of its response code
// flipped instead.
func corruptResponseBody(resp []byte) []byte {
	out := append([]byte(nil), resp...)
	if body := len(out) - headerSize; body > 0 {
		out[headerSize+body/2] ^= 0xff
	} else {
		out[headerSize-1] ^= 0xff
	}
	return out
}

// corruptResponseSize makes the header's size field claim half the
// response's length; the whole response is still sent, so a client that
// trusts the field reads a cut response followed by stray bytes (and one
// under 10 bytes long claims an impossible size).
func corruptResponseSize(resp []byte) []byte {
	out := append([]byte(nil), resp...)
	binary.BigEndian.PutUint32(out[2:6], uint32(len(out)/2))
	return out
}
