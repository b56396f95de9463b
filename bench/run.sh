#!/usr/bin/env bash
# Entry point of the rivetkit benchmark. See bench/README.md; `bench/run.sh --help` for options.
#
#   bench/run.sh                                   # ours + official + asgi, cold + http + ws + fanout, 3 reps (~11 min)
#   bench/run.sh --targets ours,asgi --reps 1      # quick look without the official stack
#   bench/run.sh --targets ours-engine,official --scenarios cold,http,ws,fanout,queue   # engine mode
#
# Installs the pinned npm deps into bench/node_modules on first use, then runs harness/run.mjs
# (the engine-mode targets install tests/engine's pinned rivet-engine themselves when missing).
# Every server started is recorded in a pid file; the EXIT trap SIGKILLs whatever is still alive
# from it (the Node orchestrator already stops servers gracefully on normal exit, Ctrl-C, SIGTERM).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)

command -v node >/dev/null || { echo "bench: node (>= 20) is required" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 20 ] || { echo "bench: node >= 20 required, found $(node -v)" >&2; exit 1; }

# Kill the processes listed in a pid file ("pid starttime comm" per line) if they are still the same
# processes (start time matches), then remove the file.
kill_listed() {
	local f=$1 pid start comm cur
	[ -f "$f" ] || return 0
	while read -r pid start comm; do
		[ -n "${pid:-}" ] || continue
		cur=$(awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$pid/stat" 2>/dev/null || true)
		if [ -n "$cur" ] && [ "$cur" = "$start" ]; then
			kill -KILL -- "-$pid" 2>/dev/null || true
			kill -KILL "$pid" 2>/dev/null || true
			echo "bench: killed leftover $comm ($pid)" >&2
		fi
	done <"$f"
	rm -f "$f"
}

mkdir -p "$HERE/out"
# leftovers of an earlier run whose run.sh died without its trap (pid file named after that run.sh)
for f in "$HERE"/out/.live-pids.*; do
	[ -e "$f" ] || continue
	owner=${f##*.}
	kill -0 "$owner" 2>/dev/null || kill_listed "$f"
done

export BENCH_PIDFILE="$HERE/out/.live-pids.$$"
: >"$BENCH_PIDFILE"
NODE_PID=""
trap 'kill_listed "$BENCH_PIDFILE"' EXIT
# On Ctrl-C / SIGTERM / SIGHUP: let the orchestrator stop its servers gracefully, then exit (the EXIT
# trap then SIGKILLs anything still listed). The orchestrator runs in the background so that this
# trap fires immediately even when only this shell is signalled.
on_signal() {
	trap '' INT TERM HUP
	if [ -n "$NODE_PID" ]; then
		kill -TERM "$NODE_PID" 2>/dev/null || true
		wait "$NODE_PID" 2>/dev/null || true
	fi
	exit 130
}
trap on_signal INT TERM HUP

if [ ! -f "$HERE/node_modules/rivetkit/package.json" ] || [ ! -d "$HERE/node_modules/@rivetkit/engine-cli" ] ||
	[ ! -f "$HERE/node_modules/ws/package.json" ]; then
	echo "bench: installing the pinned npm deps into bench/node_modules" >&2
	# `npm ci` refuses a lockfile without entries for the other platforms' optional binaries (the
	# registry mirror here does not serve them); `npm install` then installs the same locked versions.
	(cd "$HERE" && { npm ci --no-audit --no-fund --loglevel=error 2>/dev/null ||
		npm install --no-audit --no-fund --loglevel=error; })
fi

node "$HERE/harness/run.mjs" "$@" &
NODE_PID=$!
rc=0
wait "$NODE_PID" || rc=$?
NODE_PID=""
exit "$rc"
