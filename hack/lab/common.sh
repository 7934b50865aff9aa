# Shared settings for the Slurm lab scripts. Sourced, not executed.
#
# The lab is a two-node Slurm cluster (c1, c2: two slurmd on this host) in a debootstrap root file system,
# with rootless podman for jobs and an image registry on loopback:
#   LAB_SUITE=trixie  -> Slurm 24.11 (REST API v0.0.40-42), ports 6817/6818-6819/6820, registry 6850/6851
#   LAB_SUITE=sid     -> Slurm 26.05 (REST API v0.0.42-45), ports 7817/7818-7819/7820, registry 7850/7851
# Both suites can run at the same time.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAB_SUITE=${LAB_SUITE:-trixie}
case "$LAB_SUITE" in
trixie) PORT_BASE=6800 ;;
sid) PORT_BASE=7800 ;;
*)
	echo "lab: LAB_SUITE must be trixie or sid, not '$LAB_SUITE'" >&2
	exit 2
	;;
esac

# Everything the lab writes lives under one git-ignored folder.
LAB_CACHE=${LAB_CACHE:-$REPO_ROOT/.cache/lab}
LAB_DIR=$LAB_CACHE/$LAB_SUITE
ROOTFS=$LAB_DIR/rootfs
STATE=$LAB_DIR/state
# Job output: the same absolute path on the host and inside the chroot.
SHARED=${LAB_SHARED:-$LAB_DIR/shared}
ENV_FILE=$LAB_DIR/lab.env

SLURMCTLD_PORT=$((PORT_BASE + 17))
SLURMD_PORT=$((PORT_BASE + 18))  # c1
SLURMD2_PORT=$((PORT_BASE + 19)) # c2
SLURMRESTD_PORT=$((PORT_BASE + 20))
REGISTRY_PORT=$((PORT_BASE + 50))         # anonymous pulls
REGISTRY_PRIVATE_PORT=$((PORT_BASE + 51)) # basic auth
REGISTRY_USER=puller

# Each suite's job users have their own uids, so that what one lab's jobs
# leave on this host (both labs can run at once) is never counted as the
# other's.
case "$LAB_SUITE" in
trixie) UID_BASE=1500 ;;
sid) UID_BASE=1510 ;;
esac
JOB_USER=${LAB_JOB_USER:-jobuser}
JOB_UID=${LAB_JOB_UID:-$UID_BASE}
# A second job user, so that tenancy tests put two namespaces on two users.
JOB_USER2=${LAB_JOB_USER2:-jobuser2}
JOB_UID2=${LAB_JOB_UID2:-$((UID_BASE + 1))}
LAB_CPUS=${LAB_CPUS:-4}
LAB_MEM_MB=${LAB_MEM_MB:-8192}
# The second node, smaller than the first, with GPUs (numbers only).
LAB_CPUS2=${LAB_CPUS2:-2}
LAB_MEM_MB2=${LAB_MEM_MB2:-4096}
LAB_GPUS2=2 # gres.conf has two lines
TOKEN_LIFESPAN=${LAB_TOKEN_LIFESPAN:-86400}

SLURM_PACKAGES="munge slurmctld slurmd slurmrestd slurm-client slurm-wlm-jwt-plugin"
# Rootless podman and Charliecloud for jobs (runc: crun refuses the host's
# hybrid cgroups), the CA store for the lab registry's certificate, a
# static busybox the registry builds its test images from, and MPICH for
# jobs of tasks (srun --mpi=pmi2).
CONTAINER_PACKAGES="podman uidmap runc catatonit charliecloud-runtime charliecloud-builders ca-certificates busybox-static mpich"

log() { printf 'lab[%s]: %s\n' "$LAB_SUITE" "$*" >&2; }

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "lab: must run as root (debootstrap, chroot and mounts)" >&2
		exit 1
	fi
}

# in_chroot runs a command inside the chroot with a clean environment, so
# nothing from the caller (SLURM_* variables, proxies) leaks in.
in_chroot() {
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
		chroot "$ROOTFS" "$@"
}

# in_lab runs a command in the lab's own mount namespace, whose root is the
# rootfs entered with pivot_root (see lab-up.sh's enter_rootfs): unlike a
# chrooted process, it may create user namespaces, so rootless podman works.
in_lab() {
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root \
		nsenter -t "$(cat "$STATE/labns.pid")" -m -- "$@"
}

. "$(dirname "${BASH_SOURCE[0]}")/../lib/pids.sh"

# pid_alive tells whether the daemon recorded in $STATE/<name>.pid still runs.
pid_alive() { pid_running "$STATE" "$1"; }

# lab_mounts lists every mount point under this suite's folder (the rootfs,
# and a half-built rootfs.tmp that debootstrap or apt left mounted), deepest
# first. Anything mounted there is the lab's own.
lab_mounts() {
	awk -v dir="$LAB_DIR/" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r
}

# kill_leftovers kills what the lab's jobs started and Slurm did not end:
# the processes of the lab's job users whose root is this lab's rootfs
# (conmon, podman's pause process; a process of the same uid elsewhere on
# the host is not the lab's), and everything below them (the container,
# whose root is its image).
kill_leftovers() {
	local root pid uid ppid want p
	root=$(stat -c '%d %i' "$ROOTFS/" 2>/dev/null) || return 0
	want=" "
	for pid in $(ps -eo pid=,uid= | awk -v a="$JOB_UID" -v b="$JOB_UID2" '$2 == a || $2 == b { print $1 }'); do
		[ "$(stat -c '%d %i' "/proc/$pid/root/" 2>/dev/null)" = "$root" ] && want="$want$pid "
	done
	[ "$want" != " " ] || return 0
	# Descendants, to a fixed point (ps lists parents before children
	# only mostly).
	local more=1
	while [ -n "$more" ]; do
		more=
		while read -r pid ppid; do
			case $want in *" $ppid "*) case $want in *" $pid "*) ;; *) want="$want$pid " more=1 ;; esac ;; esac
		done < <(ps -eo pid=,ppid=)
	done
	log "killing what the jobs left:$want"
	for p in $want; do log "  $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-200)"; done
	for p in $want; do kill -KILL "$p" 2>/dev/null || :; done
}
