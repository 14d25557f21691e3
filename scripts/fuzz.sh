#!/usr/bin/env bash
# scripts/fuzz.sh [DURATION]: run every fuzz target of the module for DURATION
# (default 20s) each, one after the other (make fuzz). The seed corpora also
# run as plain tests in make test.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-20s}
fails=0
while read -r pkg; do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for f in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
		echo "== $pkg $f ($t)"
		go test "$pkg" -run '^$' -fuzz "^$f\$" -fuzztime "$t" || fails=$((fails + 1))
	done
done < <(go list ./...)
((fails == 0)) || { echo "fuzz: $fails target(s) failed" >&2; exit 1; }
