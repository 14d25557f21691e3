#!/usr/bin/env bash
# make demo: attestd on the in-process TPM simulator, a lifecycle over its
# socket, and verification of the result; then the control plane's flow
# through attestfleet on its embedded SQLite store.
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

# The control plane's side: attestfleet on its embedded SQLite store (no
# server to install) admits a fresh environment, dispatches it to one build,
# and signs a VSA for the build's outputs (docs/fleet.md).
say "the environment is spent; the next one boots (a fresh attestd on the simulator)"
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
fleet=$work/fleet
mkdir -p "$fleet/run"
cd "$fleet" # the build's files are named relative to here, as an executor names them
export ATTESTD_SOCKET=$fleet/run/attestd.sock
start_daemon attestd.log "$bin/attestd" --config "$work/config.yaml" --runtime-dir run
"$bin/attestctl" identity --out launch.intoto.jsonl >/dev/null
"$bin/attestctl" export-ak launch.intoto.jsonl >ak.pem 2>/dev/null

say "attestfleet serve on SQLite, with a policy pinning the fleet's AK and a result key"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out result-key.pem 2>/dev/null
openssl pkey -in result-key.pem -pubout -out result-key.pub.pem
cat >policy.yaml <<YAML
version: 1
trust:
  tpm:
    pinned_aks: [ak.pem]
YAML
cat >config.yaml <<YAML
listen: unix:$fleet/fleet.sock
store:
  sqlite: fleet.db
policy: policy.yaml
results:
  key: result-key.pem
  verifier_id: https://ci.example/attestfleet
YAML
"$bin/attestfleet" serve --config config.yaml 2>serve.log &
more_pids+=($!)
for _ in $(seq 1 300); do
	[[ -S fleet.sock ]] && break
	kill -0 "${more_pids[-1]}" 2>/dev/null || { cat serve.log; echo "demo: attestfleet exited" >&2; exit 1; }
	sleep 0.1
done
sed 's/^/  attestfleet: /' serve.log
export ATTESTFLEET_SERVER=unix:$fleet/fleet.sock # the client commands' --server

say "admission: attestfleet challenge → attestctl attest --nonce → attestfleet admit"
nonce=$("$bin/attestfleet" challenge)
echo "$nonce"
"$bin/attestctl" attest --nonce "$nonce" --out admission.intoto.json
"$bin/attestctl" bundle --out admitted.intoto.jsonl
"$bin/attestfleet" admit --nonce "$nonce" --bundle admitted.intoto.jsonl \
	--out admission.svr.json | tee admit.txt
env_key=$(awk '$1 == "env-key" { print $2 }' admit.txt)

say "dispatch: attestfleet dispatch → attestctl bind with the service's nonce → attestfleet confirm"
build=fleet-build-0001
dispatch_nonce=$("$bin/attestfleet" dispatch --env-key "$env_key" --build-id "$build")
echo "$dispatch_nonce"
"$bin/attestctl" bind --build-id "$build" --nonce "$dispatch_nonce" --out dispatch.intoto.json
"$bin/attestctl" bundle --out dispatched.intoto.jsonl
"$bin/attestfleet" confirm --build-id "$build" --bundle dispatched.intoto.jsonl \
	--out dispatch.svr.json

say "a second dispatch of the same environment is refused by the service"
rc=0
"$bin/attestfleet" dispatch --env-key "$env_key" --build-id fleet-build-0002 >second.txt 2>&1 || rc=$?
cat second.txt
echo "exit status $rc"
if [[ $rc != 1 ]] || ! grep -q ENVIRONMENT_TAKEN second.txt; then
	echo "demo: a second dispatch of one environment was not refused with ENVIRONMENT_TAKEN" >&2
	exit 1
fi

say "completion: attestfleet challenge --step complete → attestctl complete, sign → attestfleet complete"
complete_nonce=$("$bin/attestfleet" challenge --step complete --build-id "$build")
printf 'app built by %s\n' "$build" >app.bin
"$bin/attestctl" complete --build-id "$build" --output app.bin --nonce "$complete_nonce" --out complete.intoto.json
cat >provenance.json <<JSON
{"_type": "https://in-toto.io/Statement/v1",
 "subject": [{"name": "app.bin", "digest": {"sha256": "$(sha256sum app.bin | cut -d' ' -f1)"}}],
 "predicateType": "https://slsa.dev/provenance/v1",
 "predicate": {"buildDefinition": {"buildType": "https://example.com/demo/v1", "externalParameters": {}},
               "runDetails": {"builder": {"id": "https://example.com/runners/attested"}, "metadata": {"invocationId": "$build"}}}}
JSON
"$bin/attestctl" sign --build-id "$build" --statement provenance.json --out provenance.intoto.json
"$bin/attestctl" bundle --out build.intoto.jsonl
"$bin/attestfleet" complete --build-id "$build" --bundle build.intoto.jsonl --out build.vsa.json

say "the VSA the service signed, checked with its result key"
"$bin/attestfleet" check-result --key result-key.pub.pem build.vsa.json

say "attestfleet get-build (a look-up from any replica)"
"$bin/attestfleet" get-build --build-id "$build"

say "demo passed; files are in .demo/"
