#!/usr/bin/env bash
# make demo: attestd on the in-process TPM simulator, a lifecycle over its
# socket, and verification of the result.
# DEMO_BACKEND=snp|tdx make demo: the same on a fake SEV-SNP / TDX guest
# (test-only fakes that really sign with fake vendor roots, linked into a
# separate demo binary built with -tags attestd_demo_fakes).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
bin=$PWD/bin
work=$PWD/.demo
backend=${DEMO_BACKEND:-simulator}
rm -rf "$work"
mkdir -p "$work/run"
if [[ $backend != simulator ]]; then
	exec "$(dirname "$0")/demo-tee.sh" "$backend"
fi

# An image identity file and a config as an image baker would ship them.
cat >"$work/image.json" <<JSON
{"name": "demo-runner", "version": "1", "baked": "by make demo"}
JSON
cat >"$work/config.yaml" <<YAML
backend: simulator
register: 13
image_metadata: $work/image.json
executors:
  - /bin/sh
allow:
  executors: {uids: [$(id -u)]}
YAML

say "starting attestd on the in-process TPM simulator"
export ATTESTD_SOCKET="$work/run/attestd.sock"
start_daemon "$work/attestd.log" "$bin/attestd" --config "$work/config.yaml" --runtime-dir "$work/run"

say "attestctl identity (--out: the launch attestation and its event log, JSON Lines)"
"$bin/attestctl" identity --out "$work/launch.intoto.jsonl"

say "attestctl log (the agent's event log, PCR 13)"
"$bin/attestctl" log

nonce=$("$bin/attestctl" nonce)
say "attestctl attest --nonce $nonce"
"$bin/attestctl" attest --nonce "$nonce" --out "$work/attestation.intoto.jsonl"

say "attestctl verify (AK taken from the evidence: demo only)"
"$bin/attestctl" verify --nonce "$nonce" --insecure-trust-embedded-ak "$work/attestation.intoto.jsonl"

say "attestctl verify with the AK pinned from the launch attestation"
"$bin/attestctl" export-ak "$work/launch.intoto.jsonl" >"$work/ak.pem" 2>/dev/null
"$bin/attestctl" verify --nonce "$nonce" --trust-ak "$work/ak.pem" "$work/attestation.intoto.jsonl"

say "the launch attestation attestd keeps in its runtime dir verifies as is (it carries the event log it names)"
"$bin/attestctl" verify --trust-ak "$work/ak.pem" "$work/run/launch.intoto.jsonl"

say "a different nonce must not verify"
if "$bin/attestctl" verify --nonce "$("$bin/attestctl" nonce)" --trust-ak "$work/ak.pem" "$work/attestation.intoto.jsonl" >"$work/wrong-nonce.txt" 2>&1; then
	cat "$work/wrong-nonce.txt"
	echo "demo: a wrong nonce verified" >&2
	exit 1
fi
grep -E 'FAILED|NOT VERIFIED' "$work/wrong-nonce.txt"

say "a build: the shell executor of docs/integrating.md (bind, extend, complete, sign, bundle)"
dispatch_nonce=$("$bin/attestctl" nonce)
mkdir -p "$work/build"
PATH="$bin:$PATH" docs/examples/shell-executor.sh build-0001 "$work/build" "$dispatch_nonce"

say "attestctl verify the build's bundle as a chain"
"$bin/attestctl" verify --nonce "attest=$nonce" --nonce "dispatch=$dispatch_nonce" --build-id build-0001 \
	--trust-ak "$work/ak.pem" "$work/build/build.intoto.jsonl"

say "a second build in the same environment is refused"
if "$bin/attestctl" bind --build-id build-0002 >"$work/second.txt" 2>&1; then
	echo "demo: a second build ID was accepted" >&2
	exit 1
fi
cat "$work/second.txt"

say "demo passed; files are in .demo/"
