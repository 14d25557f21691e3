package measure

import "encoding/hex"

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
