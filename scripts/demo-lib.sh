# Shared by scripts/demo.sh and scripts/demo-tee.sh (sourced, not run).

pid=
more_pids=() # other background processes to stop at exit (attestfleet serve)
cleanup() {
	local p
	for p in "$pid" "${more_pids[@]}"; do
		if [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; then
			kill "$p"
			wait "$p" 2>/dev/null || true
		fi
	done
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# start_daemon LOG CMD...: runs the daemon in the background, waits for its
# socket ($ATTESTD_SOCKET) and shows its log so far.
start_daemon() {
	local log=$1
	shift
	"$@" 2>"$log" &
	pid=$!
	for _ in $(seq 1 300); do
		[[ -S "$ATTESTD_SOCKET" ]] && break
		kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "demo: attestd exited" >&2; exit 1; }
		sleep 0.1
	done
	[[ -S "$ATTESTD_SOCKET" ]] || { cat "$log"; echo "demo: attestd did not start" >&2; exit 1; }
	sed 's/^/  attestd: /' "$log"
}
