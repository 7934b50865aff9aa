#!/usr/bin/env bash
# Stop the Slurm lab: exactly the daemons lab-up started (by their recorded
# PIDs), then every mount under the chroot. Safe after a failed start and when
# nothing runs. The chroot itself stays cached.
. "$(dirname "$0")/common.sh"
need_root

stop_daemon() {
	local name=$1 f=$STATE/$1.pid pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 300); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			log "$name ($pid) ignored SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$f"
}

# Reverse start order: clients of slurmctld first, munged last.
for d in slurmrestd slurmd slurmctld munged; do
	stop_daemon "$d"
done

for m in $(lab_mounts); do
	umount "$m" 2>/dev/null || umount -l "$m"
done
rm -f "$ENV_FILE"
log "down"
