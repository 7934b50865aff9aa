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
// fetch/layout for the attempt in $n (so the script and the endpoint agree
// by construction).
var runFunction = func() string {
	f := func(kind string) string { return layout.AttemptName("$n", kind) }
	var old []string // the attempt before the previous one: every kind
	for _, k := range layout.AttemptKinds {
		old = append(old, "\"$dir/"+layout.AttemptName("$((n - 2))", k)+"\"")
	}
	return strings.NewReplacer(
		"{LOG}", f(layout.KindLog), "{EXIT}", f(layout.KindExit), "{START}", f(layout.KindStart), "{TIMES}", f(layout.KindTimes),
		"{REASON}", layout.ReasonName("$n"), "{EXITTMP}", layout.ExitTempName("$n"), "{OLD}", strings.Join(old, " "),
		"{WORK}", layout.WorkDir, "{PIDS}", layout.PIDsDir, "{MAXATTEMPT}", strconv.Itoa(layout.MaxAttempt),
		"{STDIN}", layout.StdinDir, "{ONCE}", layout.OnceSuffix,
	).Replace(`run() { # run NAME FUNC POLICY [open|once]: a container's attempts, each logged, timed and with its exit marker
	local stop=0
	trap 'stop=1' TERM
	local dir="$pod_dir/$1" n=0 rc began sampler delay=$backoff fifo= holder= svk_in=
	mkdir -p "$dir" && cd "$dir" || return 125
	# stdin: only with an agent on this node to write it (else /dev/null,
	# as a container that reads to the end must not wait for ever).
	if [ -n "${4:-}" ] && [ -n "${svk_agent:-}" ]; then
		fifo="$pod_dir/{STDIN}/$1"
		mkdir -p "$pod_dir/{STDIN}" || return 125
	fi
	while :; do
		[ "$n" -lt 2 ] || rm -f {OLD}
		rm -f "$dir/{REASON}"
		if [ -n "$fifo" ]; then
			# A new FIFO per attempt, as a restarted container has a new
			# stdin; the holder keeps it open for writing between attaches,
			# so the container neither waits to start nor reads an end of
			# file, until the agent ends the holder after the first attach
			# (once). It is set up under a temporary name and renamed into
			# place last, so an attach finds it whole or not at all, and
			# before the attempt's log exists (the provider waits for that).
			rm -f "$fifo" "$fifo{ONCE}" "$fifo.new" "$fifo{ONCE}.new"
			mkfifo -m 600 "$fifo.new" || return 125
			sleep 2147483647 <>"$fifo.new" >/dev/null 2>&1 &
			holder=$!
			exec {svk_in}<"$fifo.new" || return 125
			if [ "$4" = once ]; then
				echo "$holder" >"$fifo{ONCE}.new" && mv -f "$fifo{ONCE}.new" "$fifo{ONCE}" || return 125
			fi
			mv -f "$fifo.new" "$fifo" || return 125
		fi
		: >"$dir/{START}" && : >>"$dir/{LOG}" || return 125
		sampler=
		if [ -n "$logtime" ]; then
			"$logtime" "$dir/{LOG}" "$dir/{TIMES}" </dev/null &
			sampler=$!
		fi
		began=$SECONDS
		# The container's own exec takes its stdin from $svk_in (a pull
		# before it must not read what is typed).
		"$2" </dev/null >>"$dir/{LOG}" 2>&1
		rc=$?
		rm -f "$pod_dir/{PIDS}/$1"
		if [ -n "$holder" ]; then
			kill "$holder" 2>/dev/null
			wait "$holder" 2>/dev/null
			holder=
			exec {svk_in}<&-
			svk_in=
			rm -f "$fifo{ONCE}"
		fi
		[ -z "$sampler" ] || { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; }
		{ echo "$rc"; cat "$dir/{REASON}" 2>/dev/null || :; } >"$dir/{EXITTMP}" && mv -f "$dir/{EXITTMP}" "$dir/{EXIT}"
		rm -f "$dir/{REASON}"
		case $3 in
		Always) ;;
		OnFailure) [ "$rc" -ne 0 ] || return 0 ;;
		*) return "$rc" ;;
		esac
		[ "$stop" -eq 0 ] && [ "$n" -lt {MAXATTEMPT} ] || return "$rc"
		[ $((SECONDS - began)) -lt $((2 * backoff_max)) ] || delay=$backoff
		sleep "$delay" &
		wait $!
		[ "$stop" -eq 0 ] || { kill $! 2>/dev/null; return "$rc"; }
		delay=$((delay * 2 > backoff_max ? backoff_max : delay * 2))
		n=$((n + 1))
	done
}
svk_reason() { printf '%s\n%s\n' "$1" "$2" >"$dir/{REASON}"; } # REASON MESSAGE, for run's marker
mkdir -p "$pod_dir/{WORK}" || exit 125
`)
}()

// restartPolicy is the pod's, Always when unset (as the API server
// defaults it).
func restartPolicy(pod *corev1.Pod) corev1.RestartPolicy {
	if pod.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return pod.Spec.RestartPolicy
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
// FIFO closes, or nothing for /dev/null.
func (t *translator) stdinArg(c *corev1.Container) string {
	switch {
	case !t.stdin(c):
		return ""
	case c.StdinOnce:
		return " once"
	}
	return " open"
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
	fmt.Fprintf(&b, "pod_dir=%s\n", shq(t.podDir))
	helper := t.cfg.LogTimeHelper
	if helper == "" {
		helper = DefaultLogTimeHelper
	}
	fmt.Fprintf(&b, "backoff=%d backoff_max=%d\nlogtime=$(command -v %s 2>/dev/null || :)\n",
		seconds(t.cfg.RestartBackoff, DefaultRestartBackoff), seconds(t.cfg.MaxRestartBackoff, DefaultMaxRestartBackoff), shq(helper))
	// The marker holds the exit code, then, when the container function
	// left one (svk_reason: a pull failure...), a reason and a message.
	// SIGTERM (a delete, the time limit: Slurm signals every process of
	// the job) is for the containers: the shells that run them only note
	// it (a trap with a handler, which the container's own process does
	// not inherit), so they live on to write each container's marker, and
	// restart nothing after it.
	b.WriteString(runFunction)
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
	for _, c := range t.pod.Spec.InitContainers {
		fmt.Fprintf(&b, "run %s c_%s %s%s || exit $?\n", shq(c.Name), envSafe(c.Name), initPolicy(t.pod), t.stdinArg(&c))
	}
	b.WriteString("pids=()\n")
	for _, c := range t.pod.Spec.Containers {
		f := "c_" + envSafe(c.Name)
		if t.shape != nil && t.shape.launcher == LauncherSrun {
			fmt.Fprintf(&b, "%s_tasks() { svk_tasks %s; }\n", f, f)
			f += "_tasks"
		}
		fmt.Fprintf(&b, "run %s %s %s%s &\npids+=($!)\n", shq(c.Name), f, restartPolicy(t.pod), t.stdinArg(&c))
	}
	b.WriteString(`trap '' TERM
status=0
for p in "${pids[@]}"; do
	wait "$p"
	rc=$?
	if [ "$status" -eq 0 ] && [ "$rc" -ne 0 ]; then status=$rc; fi
done
`)
	if t.agent() {
		b.WriteString("[ -z \"$svk_agent\" ] || kill \"$svk_agent\" 2>/dev/null\n")
	}
	b.WriteString("exit \"$status\"\n")
	return b.String()
}
