#!/usr/bin/env bash
# scripts/measure-limits.sh: drive attestd (in-process TPM simulator) to every
# limit of docs/robustness.md with attestctl, as an executor would, and print
# the daemon's memory (VmRSS, VmHWM) at each step. Needs `make build`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/demo-lib.sh
. scripts/demo-lib.sh
bin=$PWD/bin
work=$(mktemp -d)
trap 'cleanup; rm -rf "$work"' EXIT
mkdir -p "$work/run"
cat >"$work/config.yaml" <<YAML
backend: simulator
executors: [/bin/sh]
allow:
  executors: {uids: [$(id -u)]}
YAML
export ATTESTD_SOCKET="$work/run/attestd.sock"
start_daemon "$work/attestd.log" "$bin/attestd" --config "$work/config.yaml" --runtime-dir "$work/run" >/dev/null
mem() { printf '%-44s %s\n' "$1" "$(grep -E '^Vm(RSS|HWM)' "/proc/$pid/status" | tr -s ' \t' ' ' | tr '\n' ' ')"; }
mem "launched"
for i in $(seq 1 10); do "$bin/attestctl" attest --nonce "$("$bin/attestctl" nonce)" --out /dev/null 2>/dev/null; done
mem "10 admissions (8 kept)"
"$bin/attestctl" bind --build-id limits-1 --out /dev/null 2>/dev/null
content=$(head -c 12288 /dev/zero | base64 -w0 | head -c 16384)
n=0
while "$bin/attestctl" extend --domain fill --operation content --content "$content" >/dev/null 2>"$work/extend.err"; do
	n=$((n + 1))
done
grep -q ResourceExhausted "$work/extend.err" || { cat "$work/extend.err"; echo "measure-limits: Extend failed otherwise" >&2; exit 1; }
mem "$n runtime events of 16 KiB (log full)"
echo "out" >"$work/out.bin"
"$bin/attestctl" complete --build-id limits-1 --output "$work/out.bin" --out /dev/null 2>/dev/null
mem "completed"
digest=$(sha256sum "$work/out.bin" | cut -d' ' -f1)
pad=$(head -c 196608 /dev/zero | base64 -w0 | head -c 258000)
for i in $(seq 0 16); do
	printf '{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"out.bin","digest":{"sha256":"%s"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"n":%d,"pad":"%s"}}' \
		"$digest" "$i" "$pad" >"$work/st.json"
	if ! "$bin/attestctl" sign --build-id limits-1 --statement "$work/st.json" --out /dev/null 2>"$work/sign.err"; then
		grep -q ResourceExhausted "$work/sign.err" || { cat "$work/sign.err"; exit 1; }
		echo "signed statement $((i + 1)): refused (ResourceExhausted), as the limit says"
	fi
done
mem "16 statements of 256 KiB signed"
"$bin/attestctl" bundle --out "$work/bundle.intoto.jsonl" 2>/dev/null
mem "bundle fetched ($(wc -c <"$work/bundle.intoto.jsonl") bytes)"
for i in $(seq 1 20); do "$bin/attestctl" bundle --out /dev/null 2>/dev/null; done
mem "20 more bundles"
