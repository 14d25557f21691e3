#!/usr/bin/env bash
# A shell build executor running one build through attestd.
# Usage: shell-executor.sh BUILD_ID WORKDIR DISPATCH_NONCE
# attestctl finds the daemon at $ATTESTD_SOCKET (default /run/attestd/attestd.sock).
set -euo pipefail
build_id=$1 work=$2 nonce=$3
cd "$work"

# 1. Dispatch: bind this environment to the build the control plane assigned.
cat >request.json <<JSON
[
  {"name": "source", "uri": "git+https://example.com/app@refs/heads/main",
   "digest": {"gitCommit": "3f2a9c1d5e8b7a6f4c3d2e1f0a9b8c7d6e5f4a3b"}},
  {"name": "entryPoint", "content": "$(printf 'make release' | base64)"},
  {"name": "tenant", "annotations": {"id": "team-a"}}
]
JSON
attestctl bind --build-id "$build_id" --request request.json --nonce "$nonce" --out dispatch.intoto.jsonl

# 2. Fetch a dependency and record what was fetched.
printf 'dependency bytes\n' >dep.tar
attestctl extend --domain deps --operation fetch \
	--content "dep.tar@sha256:$(sha256sum dep.tar | cut -d' ' -f1)"

# 3. Build.
mkdir -p out
{ printf 'app built from '; cat dep.tar; } >out/app.bin

# 4. Completion: bind inputs and outputs; the environment is spent afterwards.
attestctl complete --build-id "$build_id" --input dep.tar --output out/app.bin --out complete.intoto.jsonl

# 5. Sign the build's SLSA provenance with the environment key.
cat >provenance.json <<JSON
{"_type": "https://in-toto.io/Statement/v1",
 "subject": [{"name": "out/app.bin", "digest": {"sha256": "$(sha256sum out/app.bin | cut -d' ' -f1)"}}],
 "predicateType": "https://slsa.dev/provenance/v1",
 "predicate": {
   "buildDefinition": {"buildType": "https://example.com/shell-executor/v1",
                       "externalParameters": {"source": "git+https://example.com/app@refs/heads/main"}},
   "runDetails": {"builder": {"id": "https://example.com/runners/attested"},
                  "metadata": {"invocationId": "$build_id"}}}}
JSON
attestctl sign --build-id "$build_id" --statement provenance.json --out provenance.intoto.json

# 6. One file with every attestation of this build, for the consumer.
attestctl bundle --out build.intoto.jsonl
