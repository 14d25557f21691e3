#!/usr/bin/env bash
# scripts/fuzz.sh [DURATION]: run every fuzz target of the module for DURATION
# (default 20s) each, one after the other (make fuzz), and print the number
# of executions each made. The seed corpora also run as plain tests in
# make test. docs/fuzzing.md lists the targets and what they check.
#
# Minimization is off unless FUZZMINIMIZETIME says otherwise (a go test
# -fuzzminimizetime value, e.g. 30s or 1000x). Go spends up to 60 s by
# default minimizing each input that finds new coverage, trying removals
# quadratic in its size; with attestations, quotes and bundles of kilobytes
# that took whole runs (docs/fuzzing.md has the figures). A failing input is
# then written as found, not minimized.
#
# Go 1.26's fuzz coordinator can end a duration-bounded run with a bare
# "context deadline exceeded" at the deadline, under CPU contention, without
# any failing input (golang/go#75804, fixed in Go 1.27). Such a run is retried
# once and then reported as a flake; any run that writes a failing input, or
# fails otherwise, fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-20s}
minimize=${FUZZMINIMIZETIME:-0}
fails=0 flakes=0
log=$(mktemp)
summary=$(mktemp)
trap 'rm -f "$log" "$summary"' EXIT
deadline_flake() {
	grep -q 'context deadline exceeded' "$log" && ! grep -Eq 'Failing input written|panic:' "$log"
}
while read -r pkg; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		for try in 1 2; do
			echo "== $pkg $f ($t, try $try)"
			if go test "$pkg" -run '^$' -fuzz "^$f\$" -fuzztime "$t" -fuzzminimizetime "$minimize" 2>&1 | tee "$log" | tail -3; then
				execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
				echo "${execs:-?} $pkg $f" >>"$summary"
				break
			fi
			if ! deadline_flake; then
				echo "FAILED $pkg $f" >>"$summary"
				fails=$((fails + 1))
				break
			fi
			if ((try == 2)); then
				echo "fuzz: $f: deadline flake twice (golang/go#75804), no failing input" >&2
				echo "FLAKE $pkg $f" >>"$summary"
				flakes=$((flakes + 1))
			fi
		done
	done
done < <(go list ./...)
echo "== executions in $t (load $(cut -d' ' -f1-3 /proc/loadavg))"
cat "$summary"
echo "fuzz: $fails failed, $flakes deadline flake(s)"
((fails == 0))
