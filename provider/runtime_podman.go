package provider

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// pullPolicyOf is the script's pull step for an imagePullPolicy (the API
// server defaults it: Always for :latest or no tag, else IfNotPresent).
func pullPolicyOf(p corev1.PullPolicy) string {
	switch p {
	case corev1.PullAlways, corev1.PullNever:
		return string(p)
	}
	return string(corev1.PullIfNotPresent)
}

// podmanHelpers are the script's functions for runtime podman, defined once:
//   - svk_podman_env gives podman the environment of a login session
//     (Slurm passes none: HOME, XDG_RUNTIME_DIR) and removes a pause
//     process's PID file left by an earlier job whose processes Slurm
//     killed, or podman cannot join the user namespace again;
//   - svk_begin and svk_end share the user's pause process between jobs
//     on one node: each job holds a shared flock on podman's runtime
//     directory, and the last to end (the lock free) ends the pause
//     process; ending it under another job's podman fails that job's
//     podman with "invalid internal status" (seen with the e2e suite);
//   - svk_podman_pull applies the pull policy, and on failure leaves the
//     kubelet's reason and podman's own message for the exit marker.
const podmanHelpers = `svk_podman=$(command -v podman)
svk_podman_env() {
	local uid
	uid=$(id -u)
	[ -n "${HOME:-}" ] || export HOME="$(getent passwd "$uid" | cut -d: -f6)"
	if [ -z "${XDG_RUNTIME_DIR:-}" ] && [ -d "/run/user/$uid" ]; then export XDG_RUNTIME_DIR="/run/user/$uid"; fi
	local svk_p="${XDG_RUNTIME_DIR:-/tmp/podman-run-$uid}/libpod/tmp/pause.pid"
	if [ -f "$svk_p" ] && ! kill -0 "$(cat "$svk_p" 2>/dev/null)" 2>/dev/null; then rm -f "$svk_p"; fi
	export PODMAN_IGNORE_CGROUPSV1_WARNING=1 # or podman writes it into every container's log
}
svk_on_term() { # NAME PID: stop it as a kubelet does, TERM then KILL after the grace period (conmon, not the job, runs it)
	# Again each second while PID, what starts and attaches to it, lives:
	# a container the TERM found still being created starts after it.
	[ -n "$svk_podman" ] || return 0
	(
		cd / # the pod's directory may be gone (a delete removes it): podman needs a working directory
		svk_podman_env
		while kill -0 "$2"; do
			"$svk_podman" stop --time="$svk_grace" "slurm-vk-${svk_job}-$1${svk_task:+.$svk_task}"
			sleep 1
		done
	) >/dev/null 2>&1 &
}
svk_task_gone() { # NAME: the task's container goes, whatever state the TERM left it in (created, starting: runc init and conmon wait)
	( cd / && svk_podman_env && "$svk_podman" rm -f --time 0 "slurm-vk-${svk_job}-$1${svk_task:+.$svk_task}" ) >/dev/null 2>&1
}
svk_gone() { # PID: wait up to 2 s for it to end
	local i
	for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
}
svk_podman_dir() { # the user's podman runtime directory (its pause.pid), if it is the user's own
	local d
	d=$(svk_podman_env; printf %s "${XDG_RUNTIME_DIR:-/tmp/podman-run-$(id -u)}")
	mkdir -p -m 0700 "$d" 2>/dev/null
	[ -d "$d" ] && [ ! -L "$d" ] && [ -O "$d" ] && printf %s "$d"
}
svk_begin() { # a shared lock on that directory while the job runs: another job of the user on this node ends the pause process only when it holds the lock alone
	local d
	[ -n "$svk_podman" ] && command -v flock >/dev/null && d=$(svk_podman_dir) || return 0
	( # alone on the node: podman's state names running containers whose conmon is dead (killed, a crash) and no pause process is left, so every podman command fails until migrate resets it
		exec 9<"$d"
		flock -xn 9 || exit 0
		svk_podman_env
		out=$("$svk_podman" unshare true 2>&1) && exit 0
		case $out in *"invalid internal status"*) "$svk_podman" system migrate >/dev/null 2>&1 ;; esac
	)
	exec {svk_hold}< <(exec flock -w 60 -s -o "$d" sh -c 'echo $$; exec sleep 2147483647' 2>/dev/null)
	svk_hold_flock=$!
	read -r -u "$svk_hold" svk_hold_pid || svk_hold_pid=
	exec {svk_hold}<&-
}
svk_end() { # what is left of the job's containers goes, and the user's pause process once no other job of the user holds the lock and no container of the user runs (Slurm's cgroup would end it with the job)
	[ -n "$svk_podman" ] || return 0
	if [ -n "${svk_hold_pid:-}" ]; then
		kill "$svk_hold_pid" 2>/dev/null
		wait "$svk_hold_flock" 2>/dev/null # its flock, gone with its lock (bash 5.1 on; older returns at once: then the lock may still look held, and the pause process stays)
	fi
	(
		cd / # a delete may have removed the job's working directory, without which podman fails
		svk_podman_env
		ids=$("$svk_podman" ps -aq --filter "name=^slurm-vk-${svk_job}-" 2>/dev/null) || exit 0
		[ -z "$ids" ] || "$svk_podman" rm -f $ids >/dev/null 2>&1
		[ -n "${svk_hold_pid:-}" ] && d=$(svk_podman_dir) || exit 0
		exec 9<"$d"
		flock -xn 9 || exit 0
		[ -z "$("$svk_podman" ps -q 2>/dev/null)" ] || exit 0
		p="$d/libpod/tmp/pause.pid"
		[ -f "$p" ] && pid=$(cat "$p") && kill "$pid" 2>/dev/null || exit 0
		svk_gone "$pid"
	)
	return 0
}
svk_podman_pull() { # POLICY IMAGE [AUTHFILE]
	local out
	case $1 in
	Never)
		"$svk_podman" image exists "$2" && return 0
		svk_reason ErrImageNeverPull "Container image \"$2\" is not present with pull policy of Never"
		return 125 ;;
	IfNotPresent) "$svk_podman" image exists "$2" && return 0 ;;
	esac
	if out=$("$svk_podman" pull --quiet ${3:+--authfile "$3"} "$2" 2>&1 >/dev/null); then return 0; fi
	svk_reason ErrImagePull "Failed to pull image \"$2\": $out"
	return 125
}
`

// launchPodman runs the image with rootless podman: the job's uid inside
// (--userns=keep-id and --user, so files in volumes belong to the user), the host's
// network, the pod's env through podman's --env (literal values on its
// command line, Secret-backed ones by name from podman's environment).
func (t *translator) launchPodman(c resolved) (string, error) {
	var b strings.Builder
	b.WriteString("\t\t[ -n \"$svk_podman\" ] || { svk_reason ContainerRuntimeNotFound \"podman is not installed on $(hostname)\"; exit 127; }\n")
	b.WriteString("\t\tsvk_podman_env\n")
	pull := []string{"svk_podman_pull", pullPolicyOf(c.pullPolicy), c.image}
	if t.pullAuth != "" {
		pull = append(pull, t.pullAuth)
	}
	fmt.Fprintf(&b, "\t\t%s || exit $?\n", shqAll(pull))

	line := []string{"--rm", "--pull=never", "--userns=keep-id", "--network=host", "--env", "SLURM_JOB_ID", "--env", "SLURM_JOB_NODELIST"}
	if c.readOnlyRoot {
		// As a kubelet: the root read-only, and no tmpfs of podman's own
		// on /tmp, /run and /var/tmp (volumes are where a pod writes).
		line = append(line, "--read-only", "--read-only-tmpfs=false")
	}
	if c.noNewPrivs {
		line = append(line, "--security-opt=no-new-privileges")
	}
	if t.shape != nil {
		// A task of a job with a shape: Slurm's task variables and the
		// PMI ones that MPI ranks wire up with. (Not --ipc=host: it needs
		// /dev/mqueue, which not every node has; ranks on a node talk
		// through the network instead of shared memory.)
		line = append(line, "--env", "SLURM_*", "--env", "SLURMD_NODENAME", "--env", "PMI_*", "--env", "PMIX_*", "--env", "OMPI_*")
	}
	for _, e := range c.env {
		if e.file == "" && !strings.Contains(e.value, refMark) {
			line = append(line, "--env", e.name+"="+e.value)
			continue
		}
		if runtimeReservedName(e.name) {
			return "", reservedSecret(c, e, t.runtime)
		}
		exportEnv(&b, []envVar{e}, "")
		if !shellName.MatchString(e.name) {
			line = append(line, "--env", envLine(e))
			continue
		}
		line = append(line, "--env", e.name)
	}
	for _, m := range c.mounts {
		line = append(line, "--volume", m.spec(":ro"))
	}
	if c.workingDir != "" {
		line = append(line, "--workdir", c.workingDir)
	}
	// stdin: podman passes the job's (the attach FIFO) on only when asked;
	// tty: a terminal inside, fed by that stdin, its output to the log.
	if c.stdin {
		line = append(line, "--interactive")
	}
	if c.tty {
		line = append(line, "--tty")
	}
	// command replaces the image's ENTRYPOINT (and with it its CMD); args
	// replace CMD: podman reads a JSON array as the whole entrypoint.
	if len(c.command) > 0 {
		for _, s := range c.command {
			if strings.Contains(s, refMark) {
				return "", invalid("UnsupportedCommand", "container %q: with runtime podman, command may not refer to a Secret-backed variable; use args", c.name)
			}
		}
		ep, _ := json.Marshal(c.command)
		line = append(line, "--entrypoint", string(ep))
	}
	// The job's user inside too, whatever the image's USER says (unless
	// the pod's securityContext says otherwise): files in volumes and on
	// the shared file system belong to the user, as with every HPC
	// container runtime.
	//
	// Created, then started attached: the arguments (with a Secret's value,
	// where they refer to one) are on podman create's command line only
	// while it creates the container, not on a podman run's for the
	// container's whole life; the container's own process has them, as
	// on any node.
	name := fmt.Sprintf("\"slurm-vk-${svk_job}-%s${svk_task:+.$svk_task}\"", c.name)
	// securityContext's runAsUser and runAsGroup where the pod sets them
	// (keep-id maps other ids to the user's subordinate ones); a user
	// without a group takes the image's group for it, as on a kubelet.
	user := "\"$(id -u):$(id -g)\""
	switch {
	case c.uid != nil && c.gid != nil:
		user = fmt.Sprintf("%d:%d", *c.uid, *c.gid)
	case c.uid != nil:
		user = strconv.FormatInt(*c.uid, 10)
	case c.gid != nil:
		user = fmt.Sprintf("\"$(id -u)\":%d", *c.gid)
	}
	fmt.Fprintf(&b, "\t\t\"$svk_podman\" %s --user %s --name %s %s %s >/dev/null || exit 125\n",
		shqAll(append([]string{"create"}, line...)), user, name, shq(c.image), shqAll(c.args))
	start := []string{"start", "--attach"}
	if c.stdin {
		start = append(start, "--interactive")
	}
	fmt.Fprintf(&b, "\t\texec \"$svk_podman\" %s %s\n", shqAll(start), name)
	return b.String(), nil
}
