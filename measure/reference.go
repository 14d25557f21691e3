package measure

import (
	"crypto"
	"encoding/hex"
	"fmt"
)

// Reference computation: the events attestd will record at launch, built
// from digests an image baker computed from the image (not from files at
// these paths on the baking machine), and the register value they produce.
// The constructors here must give byte-identical events to BinaryEvent,
// ConfigEvent, ImageEvent and ExecutorEvent; reference_test.go checks it.

// FileEventFromDigest is the event BinaryEvent, ConfigEvent or ExecutorEvent
// (t) would record for a file at path (the path inside the image) with the
// given SHA-256 digest.
func FileEventFromDigest(t EventType, path string, sha256 [32]byte) (Event, error) {
	switch t {
	case EventBinary, EventConfig, EventExecutor:
	default:
		return Event{}, fmt.Errorf("file event: type %s does not measure a file", t)
	}
	return jsonEvent(t, FileMeasurement{Path: path, SHA256: hex.EncodeToString(sha256[:])})
}

// ImageEventFromDigest is the event ImageEvent would record with the image
// metadata file at metadataPath having digest metadataSHA256 (nil: the file
// does not exist) and the kernel command line cmdline.
func ImageEventFromDigest(metadataPath string, metadataSHA256 *[32]byte, cmdline string) (Event, error) {
	m := ImageMeasurement{MetadataPath: metadataPath}
	if metadataPath != "" && metadataSHA256 != nil {
		m.MetadataSHA256 = hex.EncodeToString(metadataSHA256[:])
	}
	seen := map[string]bool{}
	for _, p := range splitCmdline(cmdline) {
		var dst *string
		switch p.key {
		case "roothash":
			dst = &m.RootHash
		case "usrhash":
			dst = &m.UsrHash
		default:
			continue
		}
		if seen[p.key] {
			return Event{}, fmt.Errorf("parse kernel command line: %s= given more than once", p.key)
		}
		seen[p.key] = true
		*dst = p.val
	}
	return jsonEvent(EventImage, m)
}

// PredictRegister returns the value of a register that starts at zero and is
// extended with the digest (bank h) of each event in order — what replaying
// a CEL holding exactly these events gives.
func PredictRegister(h crypto.Hash, events []Event) ([]byte, error) {
	return PredictWithPreboot(h, nil, events)
}

// ExtendAll returns start extended with each digest in turn:
// v = H(v ‖ d). start is not modified.
func ExtendAll(h crypto.Hash, start []byte, digests [][]byte) []byte {
	v := append([]byte(nil), start...)
	for _, d := range digests {
		w := h.New()
		w.Write(v)
		w.Write(d)
		v = w.Sum(v[:0])
	}
	return v
}

// LaunchPrefix returns the records up to and including the first launch
// separator, or ok=false if there is none.
func LaunchPrefix(recs []Record) (prefix []Record, ok bool) {
	for i, r := range recs {
		if r.ContentType == ContentType && r.Type == EventSeparator {
			return recs[:i+1], true
		}
	}
	return nil, false
}
