package bench

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// tpmProxy sits between TPM clients and one swtpm. It forwards whole
// commands from any number of client connections over a single swtpm
// connection, one command at a time — a TPM runs one command at a time, and
// swtpm serves one connection — so the benchmark can reach attestd's own
// transient keys while attestd holds the TPM. It can make every command
// take at least a fixed time (a slow TPM), and it adds up how long the TPM
// was busy.
//
// Frames: a 10-byte header (tag u16, size u32, code u32, big-endian), then
// size-10 bytes.
type tpmProxy struct {
	ln net.Listener
	wg sync.WaitGroup

	tpm   sync.Mutex // held for a whole command: the TPM is busy
	up    net.Conn
	delay time.Duration // guarded by tpm

	mu     sync.Mutex // guards stats, conns, closed
	stats  tpmStats
	conns  map[net.Conn]struct{}
	closed bool
}

// tpmStats counts the commands the TPM ran and how long it was busy with
// them (the injected delay included).
type tpmStats struct {
	Commands int
	Busy     time.Duration
	ByCode   map[uint32]int
}

func (s tpmStats) sub(before tpmStats) tpmStats {
	d := tpmStats{Commands: s.Commands - before.Commands, Busy: s.Busy - before.Busy, ByCode: map[uint32]int{}}
	for c, n := range s.ByCode {
		if n -= before.ByCode[c]; n != 0 {
			d.ByCode[c] = n
		}
	}
	return d
}

const (
	frameHeader = 10
	maxFrame    = 1 << 20
)

// newTPMProxy listens on socket and forwards to the swtpm at upstream.
func newTPMProxy(socket, upstream string) (*tpmProxy, error) {
	up, err := net.Dial("unix", upstream)
	if err != nil {
		return nil, fmt.Errorf("connect to swtpm: %w", err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		up.Close()
		return nil, fmt.Errorf("TPM proxy: %w", err)
	}
	p := &tpmProxy{ln: ln, up: up, conns: map[net.Conn]struct{}{}, stats: tpmStats{ByCode: map[uint32]int{}}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Socket is where clients connect ("unix:"+Socket for attestd).
func (p *tpmProxy) Socket() string { return p.ln.Addr().String() }

// SetDelay makes every command from now on take at least d.
func (p *tpmProxy) SetDelay(d time.Duration) {
	p.tpm.Lock()
	defer p.tpm.Unlock()
	p.delay = d
}

// Stats is a snapshot of the counts so far.
func (p *tpmProxy) Stats() tpmStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.ByCode = make(map[uint32]int, len(p.stats.ByCode))
	for c, n := range p.stats.ByCode {
		s.ByCode[c] = n
	}
	return s
}

// Close stops the proxy and its connections.
func (p *tpmProxy) Close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.ln.Close()
	p.up.Close()
	p.wg.Wait()
}

func (p *tpmProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

func (p *tpmProxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer func() {
		c.Close()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	for {
		cmd, err := readFrame(c)
		if err != nil {
			return
		}
		resp, err := p.run(cmd)
		if err != nil {
			return
		}
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

// run has the TPM run one command.
func (p *tpmProxy) run(cmd []byte) ([]byte, error) {
	p.tpm.Lock()
	defer p.tpm.Unlock()
	start := time.Now()
	if _, err := p.up.Write(cmd); err != nil {
		return nil, err
	}
	resp, err := readFrame(p.up)
	if err != nil {
		return nil, err
	}
	if rest := p.delay - time.Since(start); rest > 0 {
		time.Sleep(rest)
	}
	busy := time.Since(start)
	p.mu.Lock()
	p.stats.Commands++
	p.stats.Busy += busy
	p.stats.ByCode[binary.BigEndian.Uint32(cmd[6:10])]++
	p.mu.Unlock()
	return resp, nil
}

func readFrame(r io.Reader) ([]byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < frameHeader || size > maxFrame {
		return nil, fmt.Errorf("TPM frame size %d out of range", size)
	}
	b := make([]byte, size)
	copy(b, hdr[:])
	if _, err := io.ReadFull(r, b[frameHeader:]); err != nil {
		return nil, err
	}
	return b, nil
}

// commandNames names the TPM command codes attestd uses, for the report.
var commandNames = map[uint32]string{
	0x131: "CreatePrimary", 0x148: "Certify", 0x14E: "NV_Read", 0x153: "Create",
	0x157: "Load", 0x158: "Quote", 0x15D: "Sign", 0x165: "FlushContext",
	0x173: "ReadPublic", 0x17A: "GetCapability", 0x17B: "GetRandom",
	0x17E: "PCR_Read", 0x181: "ReadClock", 0x182: "PCR_Extend",
	0x16C: "NV_ReadPublic", 0x144: "StartAuthSession",
}

func commandName(cc uint32) string {
	if n, ok := commandNames[cc]; ok {
		return n
	}
	return fmt.Sprintf("CC(%#x)", cc)
}
