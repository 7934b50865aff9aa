package provider

import (
	"strconv"
	"strings"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// ReasonTaskFailed ends a container of a multi-task job whose task failed:
// the message is srun's, naming the node, the task and its exit code.
const ReasonTaskFailed = "TaskFailed"

// tasksFunction is the script's svk_tasks for launcher srun: it runs a
// container's function as every task of the job. Each task is a new shell
// on its node, so it gets the script's functions and the variables they
// read (declare prints both, quoted for the shell) through the environment,
// not srun's command line, which ps shows and Slurm's accounting keeps;
// the task unsets it before the container starts. svk_task names the task
// (a container runtime's container name must differ per task).
//
// srun's messages go to the container's log with the tasks' output. When
// srun fails and no task left a reason of its own (a failed pull), the
// first srun message that names a failed task becomes the reason, and that
// task's exit code the container's: srun's own is the highest of its tasks,
// which may be a task the failure ended (143). --kill-on-bad-exit ends the
// other tasks when one fails.
func (t *translator) tasksFunction() string {
	vars := append([]string{"svk_pod_dir", "svk_job", "svk_dir", "svk_n", "svk_grace"}, t.rt.vars...)
	if t.hostIP {
		vars = append(vars, hostIPVar)
	}
	// srun takes the job's nodes from the allocation, but not what each
	// task gets: a job submitted through slurmrestd has no sbatch to leave
	// them in the environment.
	opts := " --kill-on-bad-exit=1 --cpus-per-task=" + strconv.Itoa(t.shape.cpusPerTask)
	if t.shape.tasks == 0 {
		opts += " --ntasks-per-node=" + strconv.Itoa(max(t.shape.tasksPerNode, 1))
	}
	if t.shape.gpusPerTask > 0 {
		opts += " --gpus-per-task=" + strconv.FormatInt(t.shape.gpusPerTask, 10)
	}
	if t.shape.labels {
		opts += " --label"
	}
	if t.shape.mpi != "" {
		opts += " --mpi=" + t.shape.mpi // a plugin name: [a-z0-9_] only
	}
	return strings.NewReplacer("{OPTS}", opts, "{VARS}", strings.Join(vars, " "), "{TASKFAILED}", ReasonTaskFailed,
		"{LOG}", layout.AttemptName("$svk_n", layout.KindLog), "{REASON}", layout.ReasonName("$svk_n")).Replace(
		`# Each task stops its own container on TERM (svk_task_run), KILL at
# the grace period's end included; srun, whose end kills the tasks at
# once, is killed that much later, so they can (svk_kill_after).
svk_kill_late=5
svk_tasks() { # FUNC NAME: FUNC as every task of the job, the container NAME
	local svk_rc m c
	svk_prologue="$(declare -f; declare -p {VARS} 2>/dev/null)" \
		srun{OPTS} bash -c 'eval "$svk_prologue" && unset svk_prologue && svk_task=$SLURM_STEP_ID.$SLURM_PROCID && svk_task_run "$0" "$1"' "$1" "$2"
	svk_rc=$?
	if [ "$svk_rc" -ne 0 ] && [ ! -s "$svk_dir/{REASON}" ] && m=$(grep -a -m1 '^srun: error: .*task' "$svk_dir/{LOG}"); then
		svk_reason {TASKFAILED} "${m#srun: error: }"
		c=${m##* }
		case $c in [1-9] | [1-9][0-9] | [1-9][0-9][0-9]) svk_rc=$c ;; esac
	fi
	return "$svk_rc"
}
svk_task_run() { # FUNC NAME: one task's container; a TERM stops it as run() stops a container on the batch host
	# (svk_on_term: podman's container is conmon's, not the task's, and
	# would outlive the task on a node where Slurm does not end what a
	# step leaves, and on every node but the batch host, where svk_end
	# never runs). The wait is cut short by the trap, then waits again.
	local svk_tname=$2 svk_tp= svk_rc svk_termed=
	trap 'svk_termed=1; [ -z "$svk_tp" ] || svk_on_term "$svk_tname" "$svk_tp"' TERM
	{
		trap : TERM
		"$1"
	} &
	svk_tp=$!
	[ -z "$svk_termed" ] || svk_on_term "$svk_tname" "$svk_tp" # a TERM before the line above
	while :; do
		wait "$svk_tp"
		svk_rc=$?
		[ "$svk_rc" -gt 128 ] && kill -0 "$svk_tp" 2>/dev/null || break
	done
	[ -z "$svk_termed" ] || svk_task_gone "$svk_tname"
	return "$svk_rc"
}
`)
}
