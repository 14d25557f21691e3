package robust

import (
	"encoding/binary"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/attestd/attestd/internal/swtpmtest"
	"github.com/attestd/attestd/internal/tpmfault"
)

// notifyListener plays systemd's notify socket: it records every message
// with the time it was sent (the kernel's timestamp, SO_TIMESTAMP, so a
// busy test process does not shift it; the arrival time where the kernel
// gives none).
type notifyListener struct {
	path string
	mu   sync.Mutex
	msgs []notifyMsg
	more chan struct{} // signalled on each message
}

type notifyMsg struct {
	at   time.Time
	text string
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	n := &notifyListener{path: filepath.Join(shortDir(t), "notify.sock"), more: make(chan struct{}, 1)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	raw.Control(func(fd uintptr) {
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMP, 1); err != nil {
			t.Logf("SO_TIMESTAMP: %v; using arrival times", err)
		}
	})
	go func() {
		buf, oob := make([]byte, 4096), make([]byte, 256)
		for {
			k, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			at := sentAt(oob[:oobn])
			n.mu.Lock()
			n.msgs = append(n.msgs, notifyMsg{at: at, text: string(buf[:k])})
			n.mu.Unlock()
			select {
			case n.more <- struct{}{}:
			default:
			}
		}
	}()
	return n
}

// sentAt is the kernel's timestamp of a datagram, or now.
func sentAt(oob []byte) time.Time {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Now()
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMP && len(m.Data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(m.Data[0:8]))
			usec := int64(binary.NativeEndian.Uint64(m.Data[8:16]))
			return time.Unix(sec, usec*1000)
		}
	}
	return time.Now()
}

// pings are the send times of WATCHDOG=1 messages.
func (n *notifyListener) pings() []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []time.Time
	for _, m := range n.msgs {
		for _, l := range strings.Split(m.text, "\n") {
			if l == "WATCHDOG=1" {
				out = append(out, m.at)
			}
		}
	}
	return out
}

// waitPings waits for at least k pings.
func (n *notifyListener) waitPings(k int, bound time.Duration) bool {
	deadline := time.After(bound)
	for len(n.pings()) < k {
		select {
		case <-n.more:
		case <-deadline:
			return false
		}
	}
	return true
}

// TestWatchdogStopsWhenTPMHangs: under systemd's watchdog (WATCHDOG_USEC,
// WATCHDOG_PID) attestd pings WATCHDOG=1 while the TPM answers, and stops
// once it hangs. idle: the daemon's own device check is the command that
// hangs; no ping may be sent after it. busy: an admission's command hangs;
// the daemon may go on pinging until that command's deadline, not after.
func TestWatchdogStopsWhenTPMHangs(t *testing.T) {
	base := swtpmtest.StartTPM(t)
	binaries(t)
	for _, busy := range []bool{false, true} {
		name := map[bool]string{false: "idle", true: "busy"}[busy]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			watchdogCase(t, base, busy)
		})
	}
}

func watchdogCase(t *testing.T, base *swtpmtest.TPM, busy bool) {
	n := listenNotify(t)
	const watchdog = time.Second
	f := setupFault(t, base, launched, tpmTimeout, func(o *daemonOpts) {
		o.env = append(o.env, "NOTIFY_SOCKET="+n.path, fmt.Sprintf("WATCHDOG_USEC=%d", watchdog.Microseconds()))
		o.watchdogPID = true
	})
	if !n.waitPings(3, startBound) {
		t.Fatalf("%d WATCHDOG=1 within %v of serving with WATCHDOG_USEC=%d; want periodic pings", len(n.pings()), startBound, watchdog.Microseconds())
	}
	health := f.d.watchHealth()
	hitc := f.proxy.Every(tpmfault.Drop)
	calls := make(chan []callResult, 1)
	if busy {
		go func() { calls <- f.tpmCalls() }()
	} else {
		close(calls)
	}
	var hit tpmfault.Hit
	select {
	case hit = <-hitc:
	case <-time.After(rpcBound):
		t.Fatal("no TPM command reached the proxy within the bound")
	}
	tm := f.expectFaultHandling(hit, health, tpmTimeout)
	<-calls
	allowed := hit.At // idle: the hung command is the check that feeds the watchdog
	if busy {
		// The daemon learns the TPM hangs at the deadline; a ping sent
		// just before it may be half a watchdog period late.
		allowed = hit.At.Add(tpmTimeout + watchdog/2)
	}
	var before, after, late int
	for _, p := range n.pings() {
		switch {
		case p.Before(hit.At):
			before++
		case p.After(allowed):
			late++
		default:
			after++
		}
	}
	t.Logf("%v hung; WATCHDOG=1: %d before, %d in the %v allowed after, %d later; fault→NOT_SERVING %s, fault→exit %s (load %s)",
		hit.Command, before, after, allowed.Sub(hit.At), late, seconds(tm.notServing), seconds(tm.exit), loadavg())
	if late > 0 {
		t.Errorf("%d WATCHDOG=1 sent more than %v after the TPM stopped answering; want none", late, allowed.Sub(hit.At))
	}
}
