# Processes we start in the background, recorded by PID so that we stop
# exactly those and nothing else. Sourced by the lab, control-plane and demo
# scripts; each keeps its PID files (DIR/NAME.pid) and logs (DIR/NAME.log).

# pid_running DIR NAME: the process recorded in DIR/NAME.pid still runs.
pid_running() {
	local f=$1/$2.pid
	[ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# pid_start DIR NAME CMD...: unless it already runs, start CMD in its own
# session with output to DIR/NAME.log, and record its PID.
pid_start() {
	local dir=$1 name=$2
	shift 2
	pid_running "$dir" "$name" && return 0
	setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
	echo $! >"$dir/$name.pid"
}

# pid_stop DIR NAME [SECONDS]: SIGTERM the recorded process, SIGKILL it if
# it is still there after SECONDS (default 10), and forget it.
pid_stop() {
	local dir=$1 name=$2 secs=${3:-10} f pid
	f=$1/$2.pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq $((secs * 10))); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "$name ($pid) ignored SIGTERM for ${secs}s; sending SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$f"
}
