package tpmfault

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/attestd/attestd/internal/swtpmtest"
)

// echoTPM is a fake TPM: it answers every command with a success response
// whose body is the command's body.
type echoTPM struct {
	path string
	ln   net.Listener

	mu       sync.Mutex
	conns    int
	commands []Command     // the commands the TPM received
	closed   chan struct{} // one value per connection the client side closed
}

func startEchoTPM(t *testing.T) *echoTPM {
	t.Helper()
	dir := shortDir(t)
	e := &echoTPM{path: filepath.Join(dir, "echo.sock"), closed: make(chan struct{}, 16)}
	ln, err := net.Listen("unix", e.path)
	if err != nil {
		t.Fatal(err)
	}
	e.ln = ln
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns++
			e.mu.Unlock()
			go func() {
				defer c.Close()
				for {
					cmd, err := readFrame(c)
					if err != nil {
						e.closed <- struct{}{}
						return
					}
					e.mu.Lock()
					e.commands = append(e.commands, Command(binary.BigEndian.Uint32(cmd[6:10])))
					e.mu.Unlock()
					resp := frame(0x8001, 0, cmd[headerSize:])
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return e
}

func (e *echoTPM) received() []Command {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Command(nil), e.commands...)
}

func (e *echoTPM) connCount() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.conns
}

// shortDir is a temp dir with a short path (unix socket paths are limited).
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tpmfault-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// frame builds a TPM command or response: tag, size, code, body.
func frame(tag uint16, code uint32, body []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(body))
	binary.BigEndian.PutUint16(b[0:2], tag)
	binary.BigEndian.PutUint32(b[2:6], uint32(headerSize+len(body)))
	binary.BigEndian.PutUint32(b[6:10], code)
	return append(b, body...)
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", p.Socket())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// wait bounds the reads of a test on a loaded machine.
const wait = 30 * time.Second

// send writes a command and reads one whole response.
func send(t *testing.T, c net.Conn, cc Command, body []byte) []byte {
	t.Helper()
	if _, err := c.Write(frame(0x8001, uint32(cc), body)); err != nil {
		t.Fatalf("write command: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	resp, err := readFrame(c)
	if err != nil {
		t.Fatalf("read response to %s: %v", cc, err)
	}
	return resp
}

func TestForwards(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c1, c2 := dial(t, p), dial(t, p)
	for i, c := range []net.Conn{c1, c2, c1} {
		body := bytes.Repeat([]byte{byte(i + 1)}, 20+i)
		got := send(t, c, CCGetRandom, body)
		if want := frame(0x8001, 0, body); !bytes.Equal(got, want) {
			t.Errorf("response %d = %x, want %x", i, got, want)
		}
	}
	if n := up.connCount(); n != 2 {
		t.Errorf("upstream saw %d connections for 2 clients, want one each", n)
	}
	if s := p.Stats(); s != (Stats{Conns: 2, Commands: 3, Responses: 3}) {
		t.Errorf("stats %+v", s)
	}
	if h := p.Hits(); len(h) != 0 {
		t.Errorf("hits without a fault: %v", h)
	}
}

func TestFaultsOnNextResponse(t *testing.T) {
	body := []byte("0123456789abcdef")
	clean := frame(0x8001, 0, body)
	for _, tc := range []struct {
		fault Fault
		check func(t *testing.T, c net.Conn)
	}{
		{Drop, func(t *testing.T, c net.Conn) {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if b, err := readFrame(c); !isTimeout(err) {
				t.Fatalf("dropped response: got %x, %v; want a read timeout", b, err)
			}
		}},
		{Delay(300 * time.Millisecond), func(t *testing.T, c net.Conn) {
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(wait))
			b, err := readFrame(c)
			if err != nil || !bytes.Equal(b, clean) {
				t.Fatalf("delayed response %x, %v", b, err)
			}
			// The delay starts when the proxy has the response, a little
			// before start: allow for that, never for less.
			if d := time.Since(start); d < 250*time.Millisecond {
				t.Errorf("response after %v, want about 300ms", d)
			}
		}},
		{Corrupt, func(t *testing.T, c net.Conn) {
			c.SetReadDeadline(time.Now().Add(wait))
			b, err := readFrame(c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b[:headerSize], clean[:headerSize]) {
				t.Errorf("header changed: %x", b[:headerSize])
			}
			var diff []int
			for i := range b {
				if b[i] != clean[i] {
					diff = append(diff, i)
				}
			}
			if want := headerSize + len(body)/2; len(diff) != 1 || diff[0] != want || b[want] != ^clean[want] {
				t.Errorf("bytes changed at %v, want only %d, flipped", diff, want)
			}
		}},
		{CorruptHeader, func(t *testing.T, c net.Conn) {
			c.SetReadDeadline(time.Now().Add(wait))
			b := make([]byte, len(clean))
			if _, err := io.ReadFull(c, b); err != nil {
				t.Fatal(err)
			}
			if got, want := binary.BigEndian.Uint32(b[2:6]), uint32(len(clean)/2); got != want {
				t.Errorf("size field %d, want %d", got, want)
			}
			if !bytes.Equal(b[6:], clean[6:]) {
				t.Errorf("more than the size changed: %x", b)
			}
		}},
		{Close, func(t *testing.T, c net.Conn) {
			c.SetReadDeadline(time.Now().Add(wait))
			if b, err := readFrame(c); !errors.Is(err, io.EOF) {
				t.Fatalf("got %x, %v; want EOF", b, err)
			}
		}},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			up := startEchoTPM(t)
			p := Start(t, up.path)
			c := dial(t, p)
			hit := p.Next(tc.fault)
			if _, err := c.Write(frame(0x8001, uint32(CCQuote), body)); err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
			select {
			case h := <-hit:
				if h.Command != CCQuote || h.Fault != tc.fault {
					t.Errorf("hit %v, want %v at %v", h, tc.fault, CCQuote)
				}
			case <-time.After(wait):
				t.Fatal("no hit reported")
			}
			if tc.fault == Close {
				select {
				case <-up.closed:
				case <-time.After(wait):
					t.Fatal("the TPM connection stayed open after Close")
				}
				return
			}
			if tc.fault == CorruptHeader {
				return // the client's framing is off now, as intended
			}
			// Once only: the connection works again.
			if got := send(t, c, CCSign, []byte("x")); !bytes.Equal(got, frame(0x8001, 0, []byte("x"))) {
				t.Errorf("response after the fault: %x", got)
			}
			if n := len(p.Hits()); n != 1 {
				t.Errorf("%d hits, want 1", n)
			}
		})
	}
}

func TestCorruptEmptyBodyFlipsResponseCode(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	p.Next(Corrupt)
	got := send(t, c, CCFlushContext, nil)
	if rc := binary.BigEndian.Uint32(got[6:10]); rc != 0xff {
		t.Errorf("response code %#x, want 0xff (0 flipped in its last byte)", rc)
	}
}

func TestEveryAndOn(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	hit := p.Every(Corrupt.On(CCSign))
	body := []byte("abcd")
	clean := frame(0x8001, 0, body)
	for i, cc := range []Command{CCQuote, CCSign, CCPCRRead, CCSign} {
		got := send(t, c, cc, body)
		if corrupted := !bytes.Equal(got, clean); corrupted != (cc == CCSign) {
			t.Errorf("command %d (%s): corrupted=%v", i, cc, corrupted)
		}
	}
	if h := <-hit; h.Command != CCSign {
		t.Errorf("first hit %v", h)
	}
	if n := len(p.Hits()); n != 2 {
		t.Errorf("%d hits, want 2", n)
	}
	p.Heal()
	if got := send(t, c, CCSign, body); !bytes.Equal(got, clean) {
		t.Errorf("after Heal: %x", got)
	}
}

func TestEveryDropHangsTheConnection(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	p.Every(Drop)
	for _, cc := range []Command{CCQuote, CCGetRandom} {
		if _, err := c.Write(frame(0x8001, uint32(cc), nil)); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if b, err := readFrame(c); !isTimeout(err) {
		t.Fatalf("got %x, %v; want a read timeout", b, err)
	}
	// Close does not wait for the dropped responses.
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Close hung")
	}
}

func TestKill(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	send(t, c, CCGetRandom, []byte("1"))
	h := p.Kill()
	if h.Fault.String() != "kill" || h.At.IsZero() {
		t.Errorf("Kill hit %v", h)
	}
	// An idle connection learns at once; the TPM side is closed too.
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := readFrame(c); !errors.Is(err, io.EOF) {
		t.Errorf("read after Kill: %v, want EOF", err)
	}
	select {
	case <-up.closed:
	case <-time.After(wait):
		t.Fatal("TPM connection still open after Kill")
	}
	// A new connection is closed without an answer.
	c2 := dial(t, p)
	c2.Write(frame(0x8001, uint32(CCGetRandom), nil))
	c2.SetReadDeadline(time.Now().Add(wait))
	if b, err := readFrame(c2); err == nil {
		t.Errorf("a dead TPM answered %x", b)
	}
	if got := up.connCount(); got != 1 {
		t.Errorf("upstream saw %d connections, want 1 (none after Kill)", got)
	}
}

func TestCloseDuringDelay(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	hit := p.Next(Delay(time.Hour))
	c.Write(frame(0x8001, uint32(CCQuote), nil))
	select {
	case <-hit:
	case <-time.After(wait):
		t.Fatal("delay never applied")
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Close waited for the delay")
	}
}

func TestBadFrameClosesConnection(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	bad := frame(0x8001, uint32(CCGetRandom), nil)
	binary.BigEndian.PutUint32(bad[2:6], 4) // shorter than a header
	c.Write(bad)
	c.SetReadDeadline(time.Now().Add(wait))
	if _, err := readFrame(c); !errors.Is(err, io.EOF) {
		t.Errorf("read after a bad frame: %v, want EOF", err)
	}
}

func TestNewNeedsPaths(t *testing.T) {
	if _, err := New(Config{Socket: filepath.Join(shortDir(t), "s")}); err == nil {
		t.Error("New without Upstream succeeded")
	}
}

// TestSwtpm passes a real command through to swtpm: TPM2_GetRandom.
func TestSwtpm(t *testing.T) {
	p := Start(t, swtpmtest.Start(t))
	c := dial(t, p)
	resp := send(t, c, CCGetRandom, []byte{0, 8})
	if rc := binary.BigEndian.Uint32(resp[6:10]); rc != 0 || len(resp) != headerSize+2+8 {
		t.Fatalf("TPM2_GetRandom: rc %#x, %d bytes", rc, len(resp))
	}
	// A corrupted response keeps its framing: the next command works.
	p.Next(Corrupt.On(CCGetRandom))
	send(t, c, CCGetRandom, []byte{0, 8})
	resp = send(t, c, CCGetRandom, []byte{0, 8})
	if rc := binary.BigEndian.Uint32(resp[6:10]); rc != 0 || len(resp) != headerSize+2+8 {
		t.Fatalf("TPM2_GetRandom after a corrupted one: rc %#x, %d bytes", rc, len(resp))
	}
	if h := p.Hits(); len(h) != 1 || h[0].Command != CCGetRandom {
		t.Errorf("hits %v", h)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestHoldKeepsTheCommandFromTheTPM(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	hit := p.Next(Hold.On(CCPCRExtend).Skip(1))
	send(t, c, CCPCRExtend, []byte("first")) // skipped
	if _, err := c.Write(frame(0x8001, uint32(CCPCRExtend), []byte("second"))); err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-hit:
		if h.Command != CCPCRExtend {
			t.Errorf("hit %v", h)
		}
	case <-time.After(wait):
		t.Fatal("hold never applied")
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if b, err := readFrame(c); !isTimeout(err) {
		t.Fatalf("held command answered: %x, %v", b, err)
	}
	// Once only; the held command never reached the TPM.
	send(t, c, CCGetRandom, []byte("x"))
	want := []Command{CCPCRExtend, CCGetRandom}
	if got := up.received(); !slices.Equal(got, want) {
		t.Errorf("TPM received %v, want %v", got, want)
	}
	if s := p.Stats(); s.Commands != 2 {
		t.Errorf("stats %+v: the held command counted as forwarded", s)
	}
}

func TestSkip(t *testing.T) {
	up := startEchoTPM(t)
	p := Start(t, up.path)
	c := dial(t, p)
	p.Next(Corrupt.On(CCSign).Skip(2))
	body := []byte("abcd")
	clean := frame(0x8001, 0, body)
	for i, cc := range []Command{CCSign, CCQuote, CCSign, CCSign, CCSign} {
		got := send(t, c, cc, body)
		if corrupted := !bytes.Equal(got, clean); corrupted != (i == 3) {
			t.Errorf("command %d (%s): corrupted=%v, want only the third Sign", i, cc, corrupted)
		}
	}
}
