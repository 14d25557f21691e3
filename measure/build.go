package measure

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// BuildIDData is the data of EventBuildID: the build the environment was
// dispatched to and the digest of its request.
type BuildIDData struct {
	BuildID       string `json:"buildId"`
	RequestSHA256 string `json:"requestSha256"` // lower-case hex
}

// RuntimeData is the data of EventRuntime: a measurement the executor
// recorded between dispatch and completion.
type RuntimeData struct {
	Domain    string `json:"domain"`
	Operation string `json:"operation"`
	Content   []byte `json:"content,omitempty"` // base64 in JSON
}

// CompleteData is the data of EventComplete: the build finished with these
// inputs and outputs.
type CompleteData struct {
	BuildID  string `json:"buildId"`
	IOSHA256 string `json:"ioSha256"` // lower-case hex
}

// BuildIDEvent records dispatch to buildID with the request digest.
func BuildIDEvent(buildID string, requestDigest [32]byte) Event {
	return mustJSONEvent(EventBuildID, BuildIDData{BuildID: buildID, RequestSHA256: hex.EncodeToString(requestDigest[:])})
}

// RuntimeEvent records one executor measurement.
func RuntimeEvent(domain, operation string, content []byte) Event {
	return mustJSONEvent(EventRuntime, RuntimeData{Domain: domain, Operation: operation, Content: content})
}

// CompleteEvent records completion of buildID with the inputs/outputs digest.
func CompleteEvent(buildID string, ioDigest [32]byte) Event {
	return mustJSONEvent(EventComplete, CompleteData{BuildID: buildID, IOSHA256: hex.EncodeToString(ioDigest[:])})
}

// BuildLog is the build an event log binds.
type BuildLog struct {
	Dispatch *BuildIDData  // the build-id event, nil before dispatch
	Complete *CompleteData // the complete event, nil before completion
}

// BuildFromLog reads the build events of an event log: at most one build-id
// event (one build per environment), and at most one complete event, for
// that build, after it. Anything else is an error naming the record.
func BuildFromLog(recs []Record) (BuildLog, error) {
	var t buildTracker
	for _, r := range recs {
		if t.add(r.Seq, r.Type, r.Data); t.err != nil {
			break
		}
	}
	return t.b, t.err
}

// buildTracker is BuildFromLog one record at a time, for a Log that keeps
// its build state as events are recorded. After the first error it ignores
// further records, as BuildFromLog stops there.
type buildTracker struct {
	b   BuildLog
	err error
}

func (t *buildTracker) add(seq uint64, typ EventType, data []byte) {
	if t.err != nil {
		return
	}
	b := &t.b
	switch typ {
	case EventBuildID:
		if b.Dispatch != nil {
			t.err = fmt.Errorf("event %d: a second build ID in one environment", seq)
			return
		}
		b.Dispatch = &BuildIDData{}
		if err := json.Unmarshal(data, b.Dispatch); err != nil {
			t.err = fmt.Errorf("event %d: %w", seq, err)
		}
	case EventComplete:
		if b.Dispatch == nil || b.Complete != nil {
			t.err = fmt.Errorf("event %d: completion out of order", seq)
			return
		}
		b.Complete = &CompleteData{}
		if err := json.Unmarshal(data, b.Complete); err != nil {
			t.err = fmt.Errorf("event %d: %w", seq, err)
			return
		}
		if b.Complete.BuildID != b.Dispatch.BuildID {
			t.err = fmt.Errorf("event %d: completes build %q, but build %q was dispatched", seq, b.Complete.BuildID, b.Dispatch.BuildID)
		}
	}
}

// result returns the build and error, with copies of the build's data.
func (t *buildTracker) result() (BuildLog, error) {
	out := t.b
	if out.Dispatch != nil {
		d := *out.Dispatch
		out.Dispatch = &d
	}
	if out.Complete != nil {
		c := *out.Complete
		out.Complete = &c
	}
	return out, t.err
}
