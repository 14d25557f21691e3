#!/usr/bin/env bash
# Regenerates the gRPC code with pinned plugin versions.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$PWD/bin/tools"
mkdir -p "$tools"
if ! command -v protoc >/dev/null; then
	echo "generate: protoc missing; run scripts/install-deps.sh" >&2
	exit 1
fi
[[ -x "$tools/protoc-gen-go" ]] || GOBIN="$tools" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
[[ -x "$tools/protoc-gen-go-grpc" ]] || GOBIN="$tools" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
PATH="$tools:$PATH" go generate ./agent/api/... ./fleet/api/...
