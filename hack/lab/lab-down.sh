#!/usr/bin/env bash
# Stop the Slurm lab: exactly the daemons lab-up started (by their recorded
# PIDs), then every mount under the chroot. Safe after a failed start and when
# nothing runs. The chroot itself stays cached.
. "$(dirname "$0")/common.sh"
need_root

# Jobs first, while slurmctld runs: a job's slurmstepd is no daemon of
# ours to stop by PID, and must not outlive the lab's nodes.
if pid_alive slurmctld && in_chroot scancel --user="$JOB_USER" >/dev/null 2>&1 &&
	in_chroot scancel --user="$JOB_USER2" >/dev/null 2>&1; then
	for _ in $(seq 60); do
		[ -z "$(in_chroot squeue -h -t running,completing,configuring -o %i 2>/dev/null)" ] && break
		sleep 0.5
	done
fi

# What the jobs left that Slurm did not track (the lab has no
# proctrack/cgroup): podman's conmon and its container, a pause process.
kill_leftovers

# Reverse start order: clients of slurmctld first, munged last.
# (slurmd: the one node of labs before the two-node lab.)
for d in slurmrestd slurmd-c1 slurmd-c2 slurmd slurmctld munged registry labns; do
	# 30 s: slurmctld takes more than 5 to save 10,000 jobs.
	pid_stop "$STATE" "$d" 30
done

for m in $(lab_mounts); do
	umount "$m" 2>/dev/null || umount -l "$m"
done
rm -f "$ENV_FILE"
log "down"
