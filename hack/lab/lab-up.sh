#!/usr/bin/env bash
# Bring up the Slurm lab: build (or reuse) the root file system, configure a
# two-node cluster, start munged, slurmctld, a slurmd per node and slurmrestd, and the
# image registry; mint a JWT for the job user and write $ENV_FILE for the tests.
# slurmd runs in a private mount namespace whose root is the rootfs entered
# with pivot_root (not chroot), so that jobs may run rootless containers.
#
# Idempotent: a running lab is left alone (only the token and env file are
# refreshed); a cached chroot is reused.
. "$(dirname "$0")/common.sh"
need_root

# host_mirror prints the Debian mirror this host's apt already uses, so the
# lab fetches from the same archive without naming one here.
host_mirror() {
	if [ -n "${LAB_MIRROR:-}" ]; then
		echo "$LAB_MIRROR"
		return
	fi
	local m
	m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }')
	if [ -z "$m" ]; then
		m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
	fi
	if [ -z "$m" ]; then
		echo "lab: cannot find a Debian mirror in /etc/apt; set LAB_MIRROR" >&2
		exit 1
	fi
	echo "$m"
}

ensure_host_tools() {
	if ! command -v debootstrap >/dev/null; then
		log "installing debootstrap on the host"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
	fi
}

# Mounts are not recorded: lab-down finds them by their location under the
# rootfs, so even a half-finished start is undone.
mount_once() {
	local target=$1
	shift
	mountpoint -q "$target" || mount "$@" "$target"
}

mount_chroot() {
	mkdir -p "$ROOTFS"/{proc,sys,dev,run} "$ROOTFS$SHARED"
	mount_once "$ROOTFS/proc" -t proc proc
	mount_once "$ROOTFS/sys" -t sysfs sysfs
	mount_once "$ROOTFS/dev" --bind /dev
	mkdir -p "$ROOTFS/dev/pts"
	mountpoint -q "$ROOTFS/dev/pts" || mount --bind /dev/pts "$ROOTFS/dev/pts" || true
	mount_once "$ROOTFS/run" -t tmpfs -o mode=0755 tmpfs
	mount_once "$ROOTFS$SHARED" --bind "$SHARED"
}

build_rootfs() {
	local stamp="$SLURM_PACKAGES $CONTAINER_PACKAGES"
	if [ -f "$ROOTFS/.lab-ready" ] && [ "$(cat "$ROOTFS/.lab-ready")" = "$stamp" ]; then
		return
	fi
	ensure_host_tools
	local mirror tmp
	mirror=$(host_mirror)
	tmp=$LAB_DIR/rootfs.tmp
	local d
	for d in munged slurmctld slurmd slurmrestd; do
		if pid_alive "$d"; then
			log "the lab runs on an outdated chroot: run 'make lab-down LAB_SUITE=$LAB_SUITE' first"
			exit 1
		fi
	done
	# Nothing runs, so any mount left here is from an interrupted build.
	for m in $(lab_mounts); do umount -l "$m"; done
	rm -rf --one-file-system "$tmp"
	# From here on in_chroot works in the rootfs being built.
	ROOTFS=$tmp
	log "debootstrap $LAB_SUITE (minbase) - the cold path takes about a minute"
	debootstrap --variant=minbase "$LAB_SUITE" "$tmp" "$mirror" >"$LAB_DIR/debootstrap.log" 2>&1 || {
		tail -n 20 "$LAB_DIR/debootstrap.log" >&2
		exit 1
	}
	printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
	chmod 0755 "$tmp/usr/sbin/policy-rc.d"
	# sid's Release file may be past its Valid-Until on a snapshot archive.
	echo 'Acquire::Check-Valid-Until "false";' >"$tmp/etc/apt/apt.conf.d/99lab"
	mkdir -p "$tmp"/{proc,sys,dev,run}
	mount -t proc proc "$tmp/proc"
	mount --bind /dev "$tmp/dev"
	mount -t tmpfs -o mode=0755 tmpfs "$tmp/run"
	log "installing $SLURM_PACKAGES $CONTAINER_PACKAGES"
	if ! in_chroot sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $SLURM_PACKAGES $CONTAINER_PACKAGES" \
		>"$LAB_DIR/apt.log" 2>&1; then
		tail -n 20 "$LAB_DIR/apt.log" >&2
		for m in $(lab_mounts); do umount -l "$m"; done
		exit 1
	fi
	in_chroot apt-get clean
	for m in $(lab_mounts); do umount "$m"; done
	ROOTFS=$LAB_DIR/rootfs
	echo "$stamp" >"$tmp/.lab-ready"
	rm -rf --one-file-system "$ROOTFS"
	mv "$tmp" "$ROOTFS"
}

configure() {
	local host
	host=$(hostname -s)
	printf '127.0.0.1 localhost %s\n' "$host" >"$ROOTFS/etc/hosts"

	# Users: two job users (uids fixed so that the host, where slurm-fetchd
	# runs, can hand pod directories to them by number), each with
	# subordinate ids for rootless podman's user namespace, and
	# slurmrestd's own unprivileged user.
	local u uid
	for u in "$JOB_USER:$JOB_UID" "$JOB_USER2:$JOB_UID2"; do
		uid=${u#*:}
		u=${u%%:*}
		# useradd gives each user its own range (login.defs SUB_UID_*), so
		# the two users' containers never share a host id.
		# A rootfs cached before the suite's uids changed has the user
		# under another uid: made again (its home holds only caches).
		if in_chroot id -u "$u" >/dev/null 2>&1 && [ "$(in_chroot id -u "$u")" != "$uid" ]; then
			in_chroot userdel -r "$u" >/dev/null 2>&1 || :
			sed -i "/^$u:/d" "$ROOTFS/etc/subuid" "$ROOTFS/etc/subgid"
		fi
		in_chroot sh -c "id $u >/dev/null 2>&1 || useradd -m -u $uid -s /bin/sh $u"
		grep -q "^$u:" "$ROOTFS/etc/subuid" && grep -q "^$u:" "$ROOTFS/etc/subgid" || {
			log "useradd gave $u no subordinate ids"
			exit 1
		}
		# The user's XDG_RUNTIME_DIR, as a login session would have it.
		mkdir -p "$ROOTFS/run/user/$uid"
		chown "$uid:$uid" "$ROOTFS/run/user/$uid"
		chmod 0700 "$ROOTFS/run/user/$uid"
	done
	in_chroot sh -c 'id slurmrestd >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin slurmrestd'
	# The shared root is the fetch endpoint's (root's): job users may pass
	# through to their own pod directories, not list, create or rename.
	chown 0:0 "$SHARED"
	chmod 0711 "$SHARED"

	mkdir -p "$ROOTFS/etc/slurm"
	if [ ! -s "$ROOTFS/etc/slurm/jwt_hs256.key" ]; then
		head -c 32 /dev/urandom >"$ROOTFS/etc/slurm/jwt_hs256.key"
	fi
	in_chroot chown slurm:slurm /etc/slurm/jwt_hs256.key
	chmod 0600 "$ROOTFS/etc/slurm/jwt_hs256.key"
	if [ ! -s "$ROOTFS/etc/munge/munge.key" ]; then
		head -c 1024 /dev/urandom >"$ROOTFS/etc/munge/munge.key"
	fi
	in_chroot chown munge:munge /etc/munge/munge.key
	chmod 0400 "$ROOTFS/etc/munge/munge.key"

	cat >"$ROOTFS/etc/slurm/slurm.conf" <<EOF
# Written by hack/lab/lab-up.sh: a two-node lab cluster. Both slurmd run on
# this host, each with its own node name and port (so the spool, PID and
# log files are per node, %n); c1 is the larger and is filled first
# (Weight), c2 is smaller and has two GPUs that are only numbers (gres.conf
# Count, no device files).
ClusterName=lab-$LAB_SUITE
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$SLURMCTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=slurm
AuthType=auth/munge
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key=/etc/slurm/jwt_hs256.key
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=500
MailProg=/bin/true
ReturnToService=2
MaxJobCount=100000
SlurmdParameters=config_overrides
SchedulerParameters=defer_batch
GresTypes=gpu
NodeName=c1 NodeAddr=127.0.0.1 Port=$SLURMD_PORT CPUs=$LAB_CPUS RealMemory=$LAB_MEM_MB Weight=1 State=UNKNOWN
NodeName=c2 NodeAddr=127.0.0.1 Port=$SLURMD2_PORT CPUs=$LAB_CPUS2 RealMemory=$LAB_MEM_MB2 Gres=gpu:$LAB_GPUS2 Weight=2 State=UNKNOWN
PartitionName=debug Nodes=c1,c2 Default=YES MaxTime=INFINITE State=UP
EOF
	# Slurm ignores a GPU without a device file; nothing opens these (no
	# cgroup constrains devices here), jobs only see the GPUs' numbers.
	{
		echo "# Written by hack/lab/lab-up.sh: c2's GPUs are numbers, not devices."
		echo "NodeName=c2 Name=gpu File=/dev/null"
		echo "NodeName=c2 Name=gpu File=/dev/zero"
	} >"$ROOTFS/etc/slurm/gres.conf"
	echo 'CgroupPlugin=disabled' >"$ROOTFS/etc/slurm/cgroup.conf"

	# Container runtime settings of the site (here: the lab), not of jobs:
	# runc and cgroupfs (no systemd here), file events, host networking
	# (pasta needs /dev/net/tun).
	cat >"$ROOTFS/etc/containers/containers.conf" <<EOF
# Written by hack/lab/lab-up.sh.
[containers]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
	if [ ! -s "$STATE/registry-password" ]; then
		(umask 077 && head -c 18 /dev/urandom | base64 >"$STATE/registry-password")
	fi
	mkdir -p "$ROOTFS"/var/lib/slurm/{slurmctld,slurmd/c1,slurmd/c2} "$ROOTFS/var/log/slurm"
	in_chroot chown -R slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
}

# start_daemon NAME CMD...: run CMD in the foreground inside the chroot, in
# its own session, and record its PID (chroot execs, so $! is the daemon).
start_daemon() {
	local name=$1
	shift
	pid_start "$STATE" "$name" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root "$@"
}

wait_for() {
	local what=$1 tries=$2
	shift 2
	for _ in $(seq "$tries"); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	log "timed out waiting for $what"
	for f in "$STATE"/*.log "$ROOTFS"/var/log/slurm/*.log; do
		[ -f "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }
	done
	return 1
}

# node_ready: every node up (idle, or running jobs).
node_ready() {
	local states
	states=$(in_chroot sinfo -h -N -o %t) && [ -n "$states" ] &&
		! grep -Evq '^(idle|mix|mixed|alloc|allocated)$' <<<"$states"
}

# enter_rootfs starts the holder of the lab's mount namespace: a private
# copy of the host's mounts in which the rootfs (with everything mounted
# under it) becomes / by pivot_root. Jobs of slurmd started there are not
# chrooted, so the kernel lets them create user namespaces (rootless
# podman); /dev/shm (podman's locks) and the cgroup tree are mounted in the
# namespace only. It dies with lab-down; the mounts go with it.
enter_rootfs() {
	pid_running "$STATE" labns && return 0
	rm -f "$ROOTFS/run/.labns-ready"
	pid_start "$STATE" labns unshare -m --propagation private -- bash -ec '
		R=$1
		mount --rbind "$R" "$R"
		mkdir -p "$R/dev/shm" "$R/sys/fs/cgroup"
		mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
		mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
		cd "$R"
		mkdir -p .oldroot
		pivot_root . .oldroot
		umount -l /.oldroot
		mount --make-rshared /
		touch /run/.labns-ready
		exec sleep infinity' labns "$ROOTFS"
	wait_for "the lab mount namespace" 40 test -e "$ROOTFS/run/.labns-ready"
}

# install_tools puts slurm-vk-logtime (the log time index helper jobs start
# beside each container) in the rootfs, as a site installs it on its compute
# nodes; rebuilt on every start so that it matches the source. Renamed into
# place: a job may be running the old one.
install_tools() {
	local tmp="$ROOTFS/usr/local/bin/.slurm-vk-logtime.new"
	mkdir -p "$ROOTFS/usr/local/bin"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -o "$tmp" ./cmd/slurm-vk-logtime)
	chmod 0755 "$tmp"
	mv -f "$tmp" "$ROOTFS/usr/local/bin/slurm-vk-logtime"
	# mpi-hello (jobs of tasks' MPI test), linked against the rootfs's
	# MPICH by the host's gcc; unresolved symbols are MPICH's dependencies,
	# found at run time in the rootfs.
	tmp="$ROOTFS/usr/local/bin/.mpi-hello.new"
	gcc -O2 -o "$tmp" "$REPO_ROOT/hack/lab/mpi-hello.c" "$ROOTFS/usr/lib/$(gcc -dumpmachine)/libmpich.so.12" \
		-Wl,--allow-shlib-undefined 2>"$LAB_DIR/mpi-hello.log" || {
		cat "$LAB_DIR/mpi-hello.log" >&2
		exit 1
	}
	mv -f "$tmp" "$ROOTFS/usr/local/bin/mpi-hello"
}

start_registry() {
	local bin=$STATE/registry
	(cd "$REPO_ROOT" && go build -o "$bin" ./hack/registry)
	pid_start "$STATE" registry "$bin" -listen "127.0.0.1:$REGISTRY_PORT" -private-listen "127.0.0.1:$REGISTRY_PRIVATE_PORT" \
		-user "$REGISTRY_USER" -password-file "$STATE/registry-password" -busybox "$ROOTFS/bin/busybox" \
		-tls-dir "$STATE/registry-tls"
	wait_for registry 60 grep -q 'registry: serving' "$STATE/registry.log"
	# Jobs trust the registry's CA like any site CA: in the system store.
	local ca=$ROOTFS/usr/local/share/ca-certificates/slurm-vk-lab-registry.crt
	if ! cmp -s "$STATE/registry-tls/ca.crt" "$ca"; then
		cp "$STATE/registry-tls/ca.crt" "$ca"
		in_chroot update-ca-certificates >/dev/null 2>&1 || { log "update-ca-certificates failed"; exit 1; }
	fi
}

start() {
	enter_rootfs
	start_registry
	mkdir -p "$ROOTFS/run/munge" "$ROOTFS/var/log/munge" "$ROOTFS/var/lib/munge"
	in_chroot chown munge:munge /run/munge /var/log/munge /var/lib/munge
	start_daemon munged chroot --userspec=munge:munge "$ROOTFS" /usr/sbin/munged -F
	wait_for munged 40 test -S "$ROOTFS/run/munge/munge.socket.2"
	start_daemon slurmctld chroot "$ROOTFS" /usr/sbin/slurmctld -D
	local n
	for n in c1 c2; do
		start_daemon "slurmd-$n" nsenter -t "$(cat "$STATE/labns.pid")" -m -- /usr/sbin/slurmd -D -N "$n"
	done
	start_daemon slurmrestd env SLURM_JWT=daemon chroot "$ROOTFS" /usr/sbin/slurmrestd \
		-u slurmrestd -g slurmrestd -a rest_auth/jwt -s openapi/slurmctld "127.0.0.1:$SLURMRESTD_PORT"
	wait_for slurmctld 60 in_chroot scontrol ping
	# A node a previous run left drained (a kill that failed) stays so
	# under ReturnToService=2; the lab starts with every node in service.
	in_chroot scontrol update nodename=ALL state=resume >/dev/null 2>&1 || :
	# ReturnToService=2 brings the nodes back from a previous run's DOWN state.
	wait_for "nodes idle" 60 node_ready
}

write_env() {
	local token version
	token=$(in_chroot scontrol token "username=$JOB_USER" "lifespan=$TOKEN_LIFESPAN" | sed -n 's/^SLURM_JWT=//p')
	[ -n "$token" ] || {
		log "scontrol token returned nothing"
		exit 1
	}
	umask 077
	printf '%s' "$token" >"$STATE/token"
	# SlurmUser's token: slurmrestd lets it act for any user through
	# X-SLURM-USER-NAME (mapped tenancy).
	token=$(in_chroot scontrol token username=slurm "lifespan=$TOKEN_LIFESPAN" | sed -n 's/^SLURM_JWT=//p')
	[ -n "$token" ] || {
		log "scontrol token username=slurm returned nothing"
		exit 1
	}
	printf '%s' "$token" >"$STATE/admin-token"
	version=$(in_chroot sinfo --version | awk '{print $2}')
	local url="http://127.0.0.1:$SLURMRESTD_PORT"
	wait_for slurmrestd 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SLURMRESTD_PORT"
	cat >"$ENV_FILE" <<EOF
# Written by hack/lab/lab-up.sh; read by the integration tests.
SLURM_LAB_SUITE=$LAB_SUITE
SLURM_LAB_VERSION=$version
SLURM_LAB_URL=$url
SLURM_LAB_USER=$JOB_USER
SLURM_LAB_UID=$JOB_UID
SLURM_LAB_TOKEN_FILE=$STATE/token
SLURM_LAB_USER2=$JOB_USER2
SLURM_LAB_UID2=$JOB_UID2
SLURM_LAB_ADMIN_TOKEN_FILE=$STATE/admin-token
SLURM_LAB_SHARED=$SHARED
SLURM_LAB_PARTITION=debug
SLURM_LAB_CPUS=$LAB_CPUS
SLURM_LAB_NODES=c1,c2
SLURM_LAB_NODE_CPUS=$LAB_CPUS,$LAB_CPUS2
SLURM_LAB_GPUS=$LAB_GPUS2
SLURM_LAB_ROOTFS=$ROOTFS
SLURM_LAB_RUNTIMES=none,podman,charliecloud
SLURM_LAB_REGISTRY=127.0.0.1:$REGISTRY_PORT
SLURM_LAB_REGISTRY_PRIVATE=127.0.0.1:$REGISTRY_PRIVATE_PORT
SLURM_LAB_REGISTRY_USER=$REGISTRY_USER
SLURM_LAB_REGISTRY_PASSWORD_FILE=$STATE/registry-password
EOF
	chmod 0644 "$ENV_FILE"
}

mkdir -p "$LAB_DIR" "$STATE" "$SHARED"
started=$(date +%s)
build_rootfs
mount_chroot
install_tools
configure
start
write_env
log "up in $(($(date +%s) - started))s: Slurm $(sed -n 's/^SLURM_LAB_VERSION=//p' "$ENV_FILE") at $(sed -n 's/^SLURM_LAB_URL=//p' "$ENV_FILE"); env file $ENV_FILE"
