#!/usr/bin/env bash
# DEMO_BACKEND=snp|tdx make demo: attestd on a fake SEV-SNP or TDX guest.
# The fakes (attest/snp/snptest, attest/tdx/tdxtest) are test-only code; they
# are linked into bin/attestd-demo-fakes (-tags attestd_demo_fakes), never
# into bin/attestd. Verification trusts their fake vendor roots through a
# policy file, which is exactly how a real verifier names AMD's or Intel's.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
kind=$1
case $kind in snp | tdx) ;; *)
	echo "demo: DEMO_BACKEND must be simulator, snp or tdx (got $kind)" >&2
	exit 2
	;;
esac
bin=$PWD/bin
work=$PWD/.demo

go build -tags attestd_demo_fakes -o "$bin/attestd-demo-fakes" ./cmd/attestd

cat >"$work/config.yaml" <<YAML
backend: $kind
image_metadata: $work/image.json
executors: [/bin/sh]
allow:
  executors: {uids: [$(id -u)]}
YAML
echo '{"name": "demo-runner", "version": "1"}' >"$work/image.json"

say "starting attestd on a FAKE $kind guest (demo only)"
export ATTESTD_SOCKET="$work/run/attestd.sock"
export ATTESTD_DEMO_FAKE_TEE=$kind ATTESTD_DEMO_FAKE_ROOTS="$work/fake-$kind-roots.pem"
start_daemon "$work/attestd.log" "$bin/attestd-demo-fakes" --config "$work/config.yaml" --runtime-dir "$work/run"

say "attestctl identity"
"$bin/attestctl" identity
say "attestctl log (the agent's event log, RTMR3)"
"$bin/attestctl" log

# The verifier's policy: trust the fake vendor roots the demo daemon wrote.
if [[ $kind == snp ]]; then
	trust="  snp:
    roots: fake-snp-roots.pem
    product: Milan"
else
	trust="  tdx:
    roots: fake-tdx-roots.pem
    insecure_skip_collateral: true   # Intel's collateral cannot be faked"
fi
cat >"$work/policy.yaml" <<YAML
version: 1
trust:
$trust
require:
  backends: [$kind]
build:
  one_build_per_environment: true
YAML
say "the verifier's policy"
cat "$work/policy.yaml"

nonce=$("$bin/attestctl" nonce)
say "admission: attestctl attest --nonce $nonce, verified"
"$bin/attestctl" attest --nonce "$nonce" --out "$work/attestation.intoto.jsonl"
"$bin/attestctl" verify --policy "$work/policy.yaml" --nonce "$nonce" "$work/attestation.intoto.jsonl"

say "a build: the shell executor of docs/integrating.md"
dispatch_nonce=$("$bin/attestctl" nonce)
mkdir -p "$work/build"
PATH="$bin:$PATH" docs/examples/shell-executor.sh build-0001 "$work/build" "$dispatch_nonce"

say "attestctl verify the build's bundle as a chain"
"$bin/attestctl" verify --policy "$work/policy.yaml" --nonce "attest=$nonce" --nonce "dispatch=$dispatch_nonce" \
	--build-id build-0001 "$work/build/build.intoto.jsonl"

say "the vendor's real roots refuse the fake"
extra=()
[[ $kind == tdx ]] && extra=(--tdx-insecure-skip-collateral)
if "$bin/attestctl" verify --nonce "$nonce" "${extra[@]}" "$work/attestation.intoto.jsonl" >"$work/real-roots.txt" 2>&1; then
	echo "demo: the real vendor roots accepted a fake attestation" >&2
	exit 1
fi
grep -E 'FAILED' "$work/real-roots.txt" | head -3

say "demo passed on a fake $kind guest; files are in .demo/"
