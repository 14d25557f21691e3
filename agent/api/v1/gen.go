// Package apiv1 holds the attestd gRPC API and its generated code.
package apiv1

//go:generate protoc --proto_path=. --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative attestd.proto
