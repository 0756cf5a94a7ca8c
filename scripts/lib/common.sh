# shellcheck shell=bash
# Helpers shared by scripts/dev-cluster, scripts/dev-postgres and scripts/demo. Source it, do not
# run it: sourcing only defines the functions below (no variables, no output), and each works
# under `set -euo pipefail`.
#
#   LOG_TAG                     set by the sourcing script (dev-cluster, ...); names it in messages
#   log MSG...                  `[LOG_TAG] MSG` on stderr
#   die MSG...                  `LOG_TAG: error: MSG` on stderr, then exit 1
#   usage                       the script's header comment (line 2 up to `set -euo`) on stderr, exit 2
#   lock_state LOCKFILE         hold an exclusive lock on LOCKFILE (fd 9) until the script exits
#   free_port                   a free TCP port on 127.0.0.1 (picked by the kernel)
#   wait_for SECONDS WHAT CMD...
#                               run CMD (its output discarded) every 0.2 s until it succeeds; after
#                               SECONDS, log `error: gave up after SECONDS s waiting for WHAT` and
#                               return 1
#   pid_alive PID               PID is a positive number and that process exists
#   pid_cmdline PID             its command line, arguments joined by spaces (fails when not alive)
#   pid_is_ours PID MARKER      PID is alive and its command line contains MARKER (such as the
#                               state directory it was started with): a pid read from a state file
#                               may have been recycled by an unrelated process since
#   stop_pid PID MARKER [NAME] [TIMEOUT]
#                               when PID is ours: TERM, wait up to TIMEOUT whole seconds (default
#                               10), then KILL; a pid that is not ours is never signalled

log() { printf '[%s] %s\n' "${LOG_TAG:-${0##*/}}" "$*" >&2; }

die() {
	printf '%s: error: %s\n' "${LOG_TAG:-${0##*/}}" "$*" >&2
	exit 1
}

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
	exit 2
}

lock_state() {
	mkdir -p "$(dirname "$1")"
	exec 9>"$1"
	flock 9
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for() {
	local secs="$1" what="$2"
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			log "error: gave up after $secs s waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

pid_alive() {
	[[ "${1:-}" =~ ^[1-9][0-9]*$ ]] && kill -0 "$1" 2>/dev/null
}

# The command line of a live PID, its arguments joined by spaces; empty for a zombie. Fails when
# PID is not alive.
pid_cmdline() {
	pid_alive "${1:-}" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null
}

# Reads the command line into a variable rather than piping it into `grep -q`, whose early exit
# could fail the pipeline under pipefail.
pid_is_ours() {
	local marker="${2:?pid_is_ours: no marker}" cmdline
	cmdline="$(pid_cmdline "${1:-}")" || return 1
	[[ "$cmdline" == *"$marker"* ]]
}

stop_pid() {
	local pid="${1:-}" marker="${2:?stop_pid: no marker}" name="${3:-process}" timeout="${4:-10}" _
	if ! pid_is_ours "$pid" "$marker"; then
		# Silent for a pid that is gone (the usual stale pid file); said aloud for a live stranger.
		if [[ -n "$(pid_cmdline "$pid" || true)" ]]; then
			log "$name: pid $pid is not ours (its command line lacks $marker); left alone"
		fi
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 1 $((timeout * 10))); do
		pid_is_ours "$pid" "$marker" || return 0
		sleep 0.1
	done
	log "$name (pid $pid) did not stop within $timeout s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}
