package tpmfault

import (
	"fmt"
	"time"
)

type kind int

const (
	none kind = iota
	drop
	delay
	corruptBody
	corruptHeader
	closeConn
	kill
	hold
)

// Fault is what the proxy does to a response (Hold: to a command) instead
// of passing it on.
// The zero Fault passes it on unchanged.
type Fault struct {
	kind  kind
	delay time.Duration
	cmd   Command // 0: any command
	skip  int     // matching commands let through first
}

// The faults. Arm one with Proxy.Next or Proxy.Every.
var (
	// Drop swallows the response: the TPM hangs on that command. Later
	// commands on the same connection are answered again (unless armed
	// with Every).
	Drop = Fault{kind: drop}
	// Corrupt flips every bit of the byte in the middle of the response
	// body (of a response without a body: the last byte of the response
	// code). Size and framing stay intact.
	Corrupt = Fault{kind: corruptBody}
	// CorruptHeader makes the header's size field claim half the
	// response's length and still sends the whole response: a client that
	// trusts the field reads a cut response, then stray bytes.
	CorruptHeader = Fault{kind: corruptHeader}
	// Close closes the client's connection (and its TPM connection)
	// instead of answering.
	Close = Fault{kind: closeConn}
	// Hold swallows the command itself: the TPM never runs it and the
	// client waits for an answer that does not come (Drop: the TPM ran it).
	// Later commands are forwarded again (unless armed with Every).
	Hold = Fault{kind: hold}
)

// Delay holds the response for d, then passes it on.
func Delay(d time.Duration) Fault { return Fault{kind: delay, delay: d} }

// On restricts f to commands with code cc (e.g. CCQuote) and their
// responses.
func (f Fault) On(cc Command) Fault {
	f.cmd = cc
	return f
}

// Skip lets the first n commands f matches pass untouched: Hold.On(CCPCRExtend).Skip(2)
// holds the third PCR extend.
func (f Fault) Skip(n int) Fault {
	f.skip = n
	return f
}

func (f Fault) String() string {
	var s string
	switch f.kind {
	case none:
		s = "none"
	case drop:
		s = "drop"
	case delay:
		s = "delay(" + f.delay.String() + ")"
	case corruptBody:
		s = "corrupt"
	case corruptHeader:
		s = "corrupt-header"
	case closeConn:
		s = "close"
	case kill:
		s = "kill"
	case hold:
		s = "hold"
	}
	if f.cmd != 0 {
		s += " on " + f.cmd.String()
	}
	if f.skip > 0 {
		s += fmt.Sprintf(" after %d", f.skip)
	}
	return s
}

// Hit is one application of a fault.
type Hit struct {
	Fault   Fault
	Command Command // the command (or its response) hit; 0 for Kill
	At      time.Time
}

func (h Hit) String() string {
	if h.Command == 0 || h.Fault.cmd != 0 {
		return h.Fault.String()
	}
	return fmt.Sprintf("%s at %s", h.Fault, h.Command)
}

// Command is a TPM 2.0 command code (TPM_CC).
type Command uint32

// Command codes attestd uses, for Fault.On.
const (
	CCCreatePrimary Command = 0x131
	CCCertify       Command = 0x148
	CCNVRead        Command = 0x14E
	CCCreate        Command = 0x153
	CCLoad          Command = 0x157
	CCQuote         Command = 0x158
	CCSign          Command = 0x15D
	CCFlushContext  Command = 0x165
	CCReadPublic    Command = 0x173
	CCGetCapability Command = 0x17A
	CCGetRandom     Command = 0x17B
	CCPCRRead       Command = 0x17E
	CCReadClock     Command = 0x181
	CCPCRExtend     Command = 0x182
)

var commandNames = map[Command]string{
	CCCreatePrimary: "CreatePrimary", CCCertify: "Certify", CCNVRead: "NV_Read",
	CCCreate: "Create", CCLoad: "Load", CCQuote: "Quote", CCSign: "Sign",
	CCFlushContext: "FlushContext", CCReadPublic: "ReadPublic", CCGetCapability: "GetCapability",
	CCGetRandom: "GetRandom", CCPCRRead: "PCR_Read", CCReadClock: "ReadClock", CCPCRExtend: "PCR_Extend",
}

func (c Command) String() string {
	if n, ok := commandNames[c]; ok {
		return "TPM2_" + n
	}
	return fmt.Sprintf("TPM_CC(%#x)", uint32(c))
}
