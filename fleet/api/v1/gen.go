// Package fleetv1 holds the fleet verifier's gRPC API, its generated code
// and a small client.
package fleetv1

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative fleet.proto
