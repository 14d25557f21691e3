// Package deps pins modules while the tree is built up; delete when every
// module is imported by real code.
package deps

import (
	_ "github.com/coreos/go-systemd/v22/daemon"
	_ "github.com/google/go-cmp/cmp"
	_ "github.com/google/go-eventlog/cel"
	_ "github.com/google/go-eventlog/register"
	_ "github.com/google/go-eventlog/tpmeventlog"
	_ "github.com/google/go-tpm-tools/client"
	_ "github.com/google/go-tpm-tools/server"
	_ "github.com/google/go-tpm-tools/simulator"
	_ "github.com/google/go-tpm/legacy/tpm2"
	_ "github.com/google/go-tpm/tpm2"
	_ "github.com/in-toto/attestation/go/predicates/scai/v0"
	_ "github.com/in-toto/attestation/go/v1"
	_ "github.com/secure-systems-lab/go-securesystemslib/dsse"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
	_ "google.golang.org/grpc"
	_ "google.golang.org/grpc/health"
	_ "google.golang.org/grpc/reflection"
	_ "google.golang.org/protobuf/encoding/protojson"
	_ "gopkg.in/yaml.v3"
)
