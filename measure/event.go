// Package measure is the pure core of attestd's own measurements: typed
// events and their digests, the TCG Canonical Event Log (CEL) the agent keeps
// of them, and replay of that log against a measurement register.
//
// It imports only the standard library and go-eventlog; see
// docs/measure-events.md for the wire format.
package measure

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // SHA-1 PCR banks
	_ "crypto/sha256"
	_ "crypto/sha512" // SHA-384 (RTMR) and SHA-512 banks
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"

	"github.com/google/go-eventlog/cel"
)

// ContentType is the CEL content type of attestd events (0xAD, "AttestD").
// It is unused by the CEL spec (5 PCClient, 7/8 IMA), Confidential Space
// (0x50) and go-eventlog's fake events (222).
const ContentType uint8 = 0xAD

// EventType says what an attestd event measures. It is the type of the TLV
// nested inside the ContentType TLV.
type EventType uint8

// Launch events (1-4, 7) are refused once the separator is recorded.
const (
	EventBinary    EventType = 1 // the running attestd binary: FileMeasurement
	EventConfig    EventType = 2 // the daemon config file: FileMeasurement
	EventImage     EventType = 3 // image identity: ImageMeasurement
	EventExecutor  EventType = 4 // an executor binary: FileMeasurement
	EventSeparator EventType = 5 // launch measurements frozen after this: Separator
	EventRestart   EventType = 6 // the daemon restarted in the same boot: Restart
	EventStorage   EventType = 7 // the system's mounts and what backs them: StorageMeasurement (launch)
	// EventPreboot is an event another component (systemd-stub) extended
	// into the register before attestd started, copied from the firmware's
	// event log: Preboot. Its digests are the firmware log's, not its
	// content's, so it is accepted only at the start of the log.
	EventPreboot EventType = 8

	// 16..31 are reserved for the build lifecycle; their data formats are
	// defined by the agent and documented in docs/measure-events.md.
	EventBuildID  EventType = 16 // the build ID bound at dispatch
	EventRuntime  EventType = 17 // a runtime measurement during the build
	EventComplete EventType = 18 // the build's inputs and outputs at completion
)

// String returns a short lower-case name, e.g. "binary".
func (t EventType) String() string {
	switch t {
	case EventBinary:
		return "binary"
	case EventConfig:
		return "config"
	case EventImage:
		return "image"
	case EventExecutor:
		return "executor"
	case EventSeparator:
		return "separator"
	case EventRestart:
		return "restart"
	case EventStorage:
		return "storage"
	case EventPreboot:
		return "preboot"
	case EventBuildID:
		return "build-id"
	case EventRuntime:
		return "runtime"
	case EventComplete:
		return "complete"
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// launch reports whether t may only be recorded before the separator.
func (t EventType) launch() bool {
	return t >= EventBinary && t <= EventExecutor || t == EventStorage
}

// MachineSpecific reports whether events of type t record the running
// machine (device numbers, disk sizes: the storage event) rather than the
// image, so that reference values computed from the image leave them out
// and a verifier appraises them by rule instead.
func (t EventType) MachineSpecific() bool {
	return t == EventStorage
}

// Event is one attestd measurement. Data is UTF-8 JSON, kept verbatim: the
// digests are over these exact bytes. Event implements cel.Content.
type Event struct {
	Type EventType
	Data []byte
}

var _ cel.Content = Event{}

// TLV returns the CEL content: TLV{ContentType, marshal(TLV{Type, Data})}.
func (e Event) TLV() (cel.TLV, error) {
	inner, err := cel.TLV{Type: uint8(e.Type), Value: e.Data}.MarshalBinary()
	if err != nil {
		return cel.TLV{}, fmt.Errorf("marshal event TLV: %w", err)
	}
	return cel.TLV{Type: ContentType, Value: inner}, nil
}

// GenerateDigest returns h(marshal(e.TLV())), the value extended into bank h.
func (e Event) GenerateDigest(h crypto.Hash) ([]byte, error) {
	if !h.Available() {
		return nil, fmt.Errorf("digest event: hash %v not available", h)
	}
	return e.appendDigest(make([]byte, 0, h.Size()), h.New())
}

// appendDigest appends w's digest of marshal(e.TLV()) to dst, hashing the
// two TLV headers and the data in place rather than marshalling them. w is
// reset first. dst needs room for the headers (10 bytes; any digest has
// it): they are written there before the digest, to spare an allocation.
func (e Event) appendDigest(dst []byte, w hash.Hash) ([]byte, error) {
	if uint64(len(e.Data)) > math.MaxUint32-tlvHeader {
		return nil, fmt.Errorf("digest event: %d bytes of data is too large for a TLV", len(e.Data))
	}
	hdr := slices.Grow(dst, 2*tlvHeader)[len(dst) : len(dst)+2*tlvHeader]
	hdr[0] = ContentType
	binary.BigEndian.PutUint32(hdr[1:tlvHeader], uint32(tlvHeader+len(e.Data)))
	hdr[tlvHeader] = uint8(e.Type)
	binary.BigEndian.PutUint32(hdr[tlvHeader+1:], uint32(len(e.Data)))
	w.Reset()
	w.Write(hdr)
	w.Write(e.Data)
	return w.Sum(dst), nil
}

// FileMeasurement is the data of EventBinary, EventConfig and EventExecutor.
type FileMeasurement struct {
	Path   string `json:"path"`
	SHA256 string `json:"sha256"` // lower-case hex
}

// ImageMeasurement is the data of EventImage. Absent values are omitted.
type ImageMeasurement struct {
	MetadataPath   string `json:"metadataPath,omitempty"`
	MetadataSHA256 string `json:"metadataSha256,omitempty"` // only if the file exists
	RootHash       string `json:"roothash,omitempty"`       // roothash= on the kernel command line
	UsrHash        string `json:"usrhash,omitempty"`        // usrhash= on the kernel command line
}

// Separator is the data of EventSeparator.
type Separator struct {
	Phase string `json:"phase"` // "launch"
}

// Restart is the data of EventRestart.
type Restart struct {
	BinarySHA256 string `json:"binarySha256"`
	ConfigSHA256 string `json:"configSha256"`
	Recovery
}

// Recovery is what a restart found and repaired, when the daemon had died
// at an unlucky instant. The zero value (nothing to repair) adds no fields.
type Recovery struct {
	// InterruptedLaunch: the daemon died before the launch separator. The
	// launch events after this restart event are a second, complete
	// measurement; verifiers fail such a launch (docs/measure-events.md).
	InterruptedLaunch bool `json:"interruptedLaunch,omitempty"`
	// CompletedSeq is the record that was in the log but not yet in the
	// register when the daemon died (its call was never answered); the
	// restart extended it, so the register now holds it.
	CompletedSeq *uint64 `json:"completedSeq,omitempty"`
	// DroppedBytes of a partial record at the end of the log (the daemon
	// died writing it, before any extend) were cut off.
	DroppedBytes int `json:"droppedBytes,omitempty"`
}

// DecodeEventData decodes an event's data into v strictly: exactly one JSON
// object, no unknown fields, nothing after it. Verifiers read event data
// this way; the digests cover the bytes, so anything a decoder would skip
// must not be there.
func DecodeEventData(data []byte, v any) error {
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
		return errors.New("not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}
