package provider

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// runFunction is the script's run and svk_reason functions: a container's
// attempts, each logged, timed and with its exit marker, in files named by
// fetch/layout for the attempt in $svk_n (so the script and the endpoint agree
// by construction).
var runFunction = func() string {
	f := func(kind string) string { return layout.AttemptName("$svk_n", kind) }
	var old []string // the attempt before the previous one: every kind
	for _, k := range layout.AttemptKinds {
		old = append(old, "\"$svk_dir/"+layout.AttemptName("$((svk_n - 2))", k)+"\"")
	}
	return strings.NewReplacer(
		"{LOG}", f(layout.KindLog), "{EXIT}", f(layout.KindExit), "{TIMES}", f(layout.KindTimes),
		"{REASON}", layout.ReasonName("$svk_n"), "{EXITTMP}", layout.ExitTempName("$svk_n"), "{OLD}", strings.Join(old, " "),
		"{WORK}", layout.WorkDir, "{PIDS}", layout.PIDsDir, "{MAXATTEMPT}", strconv.Itoa(layout.MaxAttempt),
		"{STDIN}", layout.StdinDir, "{ONCE}", layout.OnceSuffix, "{MSG}", f(layout.KindMsg),
		"{MAXMSG}", strconv.Itoa(maxTerminationMessage), "{LOGLINES}", strconv.Itoa(maxTerminationLogLines), "{MAXLOGMSG}", strconv.Itoa(maxTerminationLogBytes),
	).Replace(`run() { # run NAME FUNC POLICY STDIN MSG: a container's attempts, each logged, timed and with its exit marker
	# STDIN: - (none), open or once; MSG: how its termination message is
	# found: file (the file its runtime binds at terminationMessagePath),
	# logs (the log's tail when it failed), file+logs (the file, else the
	# log's tail when it failed), -.
	local svk_stop=0 svk_name=$1 svk_cpid= svk_wd= svk_msg= svk_m
	# TERM (a delete, the time limit) is for the container, which Slurm
	# signals too: this shell notes it, restarts nothing after it, and
	# lets the runtime stop what is not the job's own process (svk_on_term).
	# The container's process group is its own (below): the TERM goes on
	# to it (Slurm may signal only the job's), and once the grace period
	# is over, what still runs there is killed, as a kubelet kills a
	# container's cgroup.
	# A job's tasks (FUNC *_tasks: srun) get Slurm's TERM themselves and
	# stop their containers (svk_task_run); a TERM to srun would end the
	# step, killing them at once.
	trap 'svk_stop=1; [ -z "$svk_cpid" ] || { [[ $2 == *_tasks ]] || kill -TERM -- "-$svk_cpid" 2>/dev/null; svk_on_term "$svk_name" "$svk_cpid"; svk_kill_after "$svk_cpid"; }' TERM
	local svk_dir="$svk_pod_dir/$1" svk_n=0 svk_rc svk_began svk_sampler svk_delay=$svk_backoff svk_fifo= svk_holder= svk_in=
	mkdir -p "$svk_dir" && cd "$svk_dir" || return 125
	# stdin: only with an agent on this node to write it (else /dev/null,
	# as a container that reads to the end must not wait for ever).
	if [ "$4" != - ] && [ -n "${svk_agent:-}" ]; then
		svk_fifo="$svk_pod_dir/{STDIN}/$1"
		mkdir -p "$svk_pod_dir/{STDIN}" || return 125
	fi
	while :; do
		[ "$svk_n" -lt 2 ] || rm -f {OLD}
		rm -f "$svk_dir/{REASON}"
		if [ -n "$svk_fifo" ]; then
			# A new FIFO per attempt, as a restarted container has a new
			# stdin; the holder keeps it open for writing between attaches,
			# so the container neither waits to start nor reads an end of
			# file, until the agent ends the holder after the first attach
			# (once). It is set up under a temporary name and renamed into
			# place last, so an attach finds it whole or not at all, and
			# before the attempt's log exists (the provider waits for that).
			rm -f "$svk_fifo" "$svk_fifo{ONCE}" "$svk_fifo.new" "$svk_fifo{ONCE}.new"
			mkfifo -m 600 "$svk_fifo.new" || return 125
			sleep 2147483647 <>"$svk_fifo.new" >/dev/null 2>&1 &
			svk_holder=$!
			exec {svk_in}<"$svk_fifo.new" || return 125
			if [ "$4" = once ]; then
				echo "$svk_holder" >"$svk_fifo{ONCE}.new" && mv -f "$svk_fifo{ONCE}.new" "$svk_fifo{ONCE}" || return 125
			fi
			mv -f "$svk_fifo.new" "$svk_fifo" || return 125
		fi
		: >>"$svk_dir/{LOG}" || return 125
		svk_msg=
		case $5 in file*)
			# Writable by whatever user the container runs as (inside a pod
			# directory closed to others).
			svk_msg="$svk_dir/{MSG}"
			: >"$svk_msg" && chmod 666 "$svk_msg" || return 125 ;;
		esac
		svk_sampler=
		if [ -n "$svk_logtime" ]; then
			"$svk_logtime" "$svk_dir/{LOG}" "$svk_dir/{TIMES}" </dev/null &
			svk_sampler=$!
		fi
		svk_began=$SECONDS
		# The container's own exec takes its stdin from $svk_in (a pull
		# before it must not read what is typed). In the background, so
		# that a TERM runs the trap at once (bash holds a trap until a
		# foreground command ends); a wait the trap cut short waits again.
		# (This subshell keeps a handler for TERM, as this shell does, so
		# that its status is the container's; the container's own is
		# reset to the default, a handler is not inherited by exec.)
		# In a process group of its own (set -m), so that what it leaves
		# running, as a kubelet's cgroup would, ends with it.
		set -m
		{
			trap : TERM
			"$2"
		} </dev/null >>"$svk_dir/{LOG}" 2>&1 &
		svk_cpid=$!
		set +m
		while :; do
			wait "$svk_cpid"
			svk_rc=$?
			[ "$svk_rc" -gt 128 ] && kill -0 "$svk_cpid" 2>/dev/null || break
		done
		kill -KILL -- "-$svk_cpid" 2>/dev/null
		[ -z "$svk_wd" ] || { kill -KILL -- "-$svk_wd" 2>/dev/null; wait "$svk_wd" 2>/dev/null; svk_wd=; }
		svk_cpid=
		rm -f "$svk_pod_dir/{PIDS}/$1"
		if [ -n "$svk_holder" ]; then
			kill "$svk_holder" 2>/dev/null
			wait "$svk_holder" 2>/dev/null
			svk_holder=
			exec {svk_in}<&-
			svk_in=
			rm -f "$svk_fifo{ONCE}"
		fi
		[ -z "$svk_sampler" ] || { kill "$svk_sampler" 2>/dev/null; wait "$svk_sampler" 2>/dev/null; }
		# The termination message, as the kubelet reads it: the file (at
		# most {MAXMSG} bytes), else, if it failed and the pod asks, the
		# log's last {LOGLINES} lines (at most {MAXLOGMSG} bytes); in the
		# marker after an empty reason line, byte for byte.
		svk_m=
		[ -z "$svk_msg" ] || svk_m=$(head -c {MAXMSG} "$svk_msg" 2>/dev/null; printf x)
		svk_m=${svk_m%x}
		case $5 in *logs) [ -n "$svk_m" ] || [ "$svk_rc" -eq 0 ] || { svk_m=$(tail -n {LOGLINES} "$svk_dir/{LOG}" | tail -c {MAXLOGMSG}; printf x); svk_m=${svk_m%x}; } ;; esac
		{
			echo "$svk_rc"
			if [ -s "$svk_dir/{REASON}" ]; then cat "$svk_dir/{REASON}"; elif [ -n "$svk_m" ]; then printf '\n%s' "$svk_m"; fi
		} >"$svk_dir/{EXITTMP}" && mv -f "$svk_dir/{EXITTMP}" "$svk_dir/{EXIT}"
		rm -f "$svk_dir/{REASON}"
		case $3 in
		Always) ;;
		OnFailure) [ "$svk_rc" -ne 0 ] || return 0 ;;
		*) return "$svk_rc" ;;
		esac
		[ "$svk_stop" -eq 0 ] && [ "$svk_n" -lt {MAXATTEMPT} ] || return "$svk_rc"
		[ $((SECONDS - svk_began)) -lt $((2 * svk_backoff_max)) ] || svk_delay=$svk_backoff
		sleep "$svk_delay" &
		wait $!
		[ "$svk_stop" -eq 0 ] || { kill $! 2>/dev/null; return "$svk_rc"; }
		svk_delay=$((svk_delay * 2 > svk_backoff_max ? svk_backoff_max : svk_delay * 2))
		svk_n=$((svk_n + 1))
	done
}
svk_reason() { printf '%s\n%s\n' "$1" "$2" >"$svk_dir/{REASON}"; } # REASON MESSAGE, for run's marker
# A runtime whose containers are not the job's own processes (podman's
# are conmon's) stops them itself: on TERM (NAME PID), when a task
# stopped by a TERM is over (svk_task_gone NAME: what a TERM cut short
# while it was being started), and at the job's end; svk_begin runs
# before the first container.
svk_on_term() { :; }
svk_task_gone() { :; }
svk_begin() { :; }
svk_end() { :; }
svk_started() { # NAME PID KIND: wait until a sidecar has started (an attempt's KIND file), or its run ended
	local f
	while :; do
		for f in "$svk_pod_dir/$1"/*."$3"; do [ -e "$f" ] && return 0; done
		kill -0 "$2" 2>/dev/null || { wait "$2"; return; }
		sleep 0.2
	done
}
svk_stop_sidecars() { # once the containers have ended (or an init container failed): TERM, as a kubelet stops them
	local p
	[ "${#svk_side[@]}" -gt 0 ] || return 0
	for p in "${svk_side[@]}"; do kill -TERM "$p" 2>/dev/null; done
	for p in "${svk_side[@]}"; do wait "$p" 2>/dev/null; done
}
svk_kill_after() { # PGID: KILL the group once the grace period is over (run's svk_wd)
	[ -z "$svk_wd" ] || return 0
	set -m # its own group too: run ends it, sleep and all, when the container ends first
	{ trap "" TERM; sleep "$((svk_grace + ${svk_kill_late:-0}))"; kill -KILL -- "-$1"; } >/dev/null 2>&1 &
	svk_wd=$!
	set +m
}
mkdir -p "$svk_pod_dir/{WORK}" || exit 125
`)
}()

// hostIPFunction sets hostIPVar: the address Slurm reaches this node by
// (its NodeAddr, from scontrol, which runs wherever slurmd does), as an IP
// (a name is looked up), as the provider reports the pod's host and pod IP.
var hostIPFunction = strings.ReplaceAll(`svk_node_ip() {
	local a
	a=$(scontrol show node "${SLURMD_NODENAME:-$(hostname -s)}" 2>/dev/null | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
	case $a in
	*:* | [0-9]*.[0-9]*.[0-9]*.[0-9]*) ;;
	*) a=$(getent ahosts "${a:-$(hostname)}" 2>/dev/null | awk 'NR == 1 { print $1 }') ;;
	esac
	printf '%s' "$a"
}
{VAR}=$(svk_node_ip)
`, "{VAR}", hostIPVar)

// restartPolicy is the pod's, Always when unset (as the API server
// defaults it).
func restartPolicy(pod *corev1.Pod) corev1.RestartPolicy {
	if pod.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return pod.Spec.RestartPolicy
}

// sidecar says whether an init container is a sidecar: its own
// restartPolicy Always (it runs beside the containers).
func sidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// initPolicy is how init containers restart: on failure, unless the pod
// never restarts anything (the kubelet's rule).
func initPolicy(pod *corev1.Pod) corev1.RestartPolicy {
	if restartPolicy(pod) == corev1.RestartPolicyNever {
		return corev1.RestartPolicyNever
	}
	return corev1.RestartPolicyOnFailure
}

// stdin says whether the container reads the attach FIFO: it asked for
// stdin, and the job starts the agent, which writes it (on the batch
// step's node: srun's tasks read /dev/null).
func (t *translator) stdin(c *corev1.Container) bool {
	return c.Stdin && t.agent()
}

// anyStdin says whether some container of the pod reads the attach FIFO.
func (t *translator) anyStdin() bool {
	for _, cs := range [][]corev1.Container{t.pod.Spec.InitContainers, t.pod.Spec.Containers} {
		for i := range cs {
			if t.stdin(&cs[i]) {
				return true
			}
		}
	}
	return false
}

// stdinArg is run's fourth argument for the container: how its stdin
// FIFO closes, or - for /dev/null.
func (t *translator) stdinArg(c *corev1.Container) string {
	switch {
	case !t.stdin(c):
		return "-"
	case c.StdinOnce:
		return "once"
	}
	return "open"
}

// Bounds of a termination message, the kubelet's: what is read of the
// file, and of the log (its last lines, and bytes) with
// FallbackToLogsOnError.
const (
	maxTerminationMessage  = 4096
	maxTerminationLogLines = 80
	maxTerminationLogBytes = 2048
)

// msgArg is run's fifth argument for the container: where its termination
// message comes from (file: the runtime binds the file at its
// terminationMessagePath; logs: the log's tail if it failed).
func (t *translator) msgArg(c *corev1.Container) string {
	arg := "-"
	if t.rt.messageFile && c.TerminationMessagePath != "" {
		arg = "file"
	}
	if c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		if arg == "-" {
			return "logs"
		}
		return arg + "+logs"
	}
	return arg
}

// stopGrace is how long a container stopped on TERM has before it is
// killed: the pod's grace period, less a second, so the runtime's KILL
// comes before Slurm's (the provider cancels the job when the grace
// period is over; Slurm's time limit leaves KillWait, 30 s by default).
func (t *translator) stopGrace() int {
	g := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if p := t.pod.Spec.TerminationGracePeriodSeconds; p != nil {
		g = *p
	}
	return int(max(g-1, 0))
}

func seconds(d, def time.Duration) int {
	if d <= 0 {
		d = def
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

// script is the batch script: init containers in order (stopping at the
// first that fails for good), then every container at once, each restarted
// under the pod's restartPolicy with the kubelet's back-off. Each attempt's
// output goes to its own log, timed by the log-time helper beside it, and
// its exit code to its marker, written atomically after the last byte; the
// job exits with the first non-zero final code. Attempts older than the
// previous one are removed, as the kubelet keeps one dead container.
func (t *translator) script(inits, mains []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# slurm-vk: pod %s/%s uid %s\n", t.pod.Namespace, t.pod.Name, t.pod.UID)
	// Every variable of the script is named svk_*, which no pod's env may
	// be (env.go): the container's env, set in its function, cannot steer
	// what the script does after it. The job's ID too, as it names things.
	fmt.Fprintf(&b, "svk_pod_dir=%s svk_job=$SLURM_JOB_ID\n", shq(t.podDir))
	helper := t.cfg.LogTimeHelper
	if helper == "" {
		helper = DefaultLogTimeHelper
	}
	fmt.Fprintf(&b, "svk_backoff=%d svk_backoff_max=%d svk_grace=%d\nsvk_logtime=$(command -v %s 2>/dev/null || :)\n",
		seconds(t.cfg.RestartBackoff, DefaultRestartBackoff), seconds(t.cfg.MaxRestartBackoff, DefaultMaxRestartBackoff), t.stopGrace(), shq(helper))
	// The marker holds the exit code, then, when the container function
	// left one (svk_reason: a pull failure...), a reason and a message.
	// SIGTERM (a delete, the time limit: Slurm signals every process of
	// the job) is for the containers: the shells that run them only note
	// it (a trap with a handler, which the container's own process does
	// not inherit), so they live on to write each container's marker, and
	// restart nothing after it.
	b.WriteString(runFunction)
	if t.hostIP {
		b.WriteString(hostIPFunction)
	}
	b.WriteString(t.hostsLines)
	b.WriteString(t.agentLines())
	b.WriteString(t.rt.helpers)
	if t.shape != nil && t.shape.launcher == LauncherSrun {
		b.WriteString(t.tasksFunction())
	}
	for _, block := range inits {
		b.WriteString(block)
	}
	for _, block := range mains {
		b.WriteString(block)
	}
	b.WriteString("svk_begin\nsvk_side=()\n")
	for _, c := range t.pod.Spec.InitContainers {
		if sidecar(&c) {
			// A sidecar runs beside what follows, restarted whatever its
			// exit, from the moment it has started (its startup probe
			// passed, where the agent runs one) until the containers end.
			kind := layout.KindStart
			if c.StartupProbe != nil && t.probes {
				kind = layout.KindStarted
			}
			fmt.Fprintf(&b, "run %s c_%s Always %s %s &\nsvk_side+=($!)\nsvk_started %s \"$!\" %s || { svk_status=$?; svk_stop_sidecars; svk_end; exit \"$svk_status\"; }\n",
				shq(c.Name), envSafe(c.Name), t.stdinArg(&c), t.msgArg(&c), shq(c.Name), kind)
			continue
		}
		fmt.Fprintf(&b, "run %s c_%s %s %s %s || { svk_status=$?; svk_stop_sidecars; svk_end; exit \"$svk_status\"; }\n", shq(c.Name), envSafe(c.Name), initPolicy(t.pod), t.stdinArg(&c), t.msgArg(&c))
	}
	b.WriteString("svk_pids=()\n")
	for _, c := range t.pod.Spec.Containers {
		f := "c_" + envSafe(c.Name)
		if t.shape != nil && t.shape.launcher == LauncherSrun {
			fmt.Fprintf(&b, "%s_tasks() { svk_tasks %s %s; }\n", f, f, shq(c.Name))
			f += "_tasks"
		}
		fmt.Fprintf(&b, "run %s %s %s %s %s &\nsvk_pids+=($!)\n", shq(c.Name), f, restartPolicy(t.pod), t.stdinArg(&c), t.msgArg(&c))
	}
	b.WriteString(`trap '' TERM
svk_status=0
for svk_p in "${svk_pids[@]}"; do
	wait "$svk_p"
	svk_rc=$?
	if [ "$svk_status" -eq 0 ] && [ "$svk_rc" -ne 0 ]; then svk_status=$svk_rc; fi
done
`)
	b.WriteString("svk_stop_sidecars\n")
	if t.agent() {
		b.WriteString("[ -z \"$svk_agent\" ] || kill \"$svk_agent\" 2>/dev/null\n")
	}
	b.WriteString("svk_end\nexit \"$svk_status\"\n")
	return b.String()
}
