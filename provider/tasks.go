package provider

import (
	"strconv"
	"strings"
)

// ReasonTaskFailed ends a container of a multi-task job whose task failed:
// the message is srun's, naming the node, the task and its exit code.
const ReasonTaskFailed = "TaskFailed"

// tasksFunction is the script's svk_tasks for launcher srun: it runs a
// container's function as every task of the job. Each task is a new shell
// on its node, so it gets the script's functions and the variables they
// read (declare prints both, quoted for the shell), and svk_task, which
// names the task (a container runtime's container name must differ per
// task). srun's stderr (its own messages and the tasks' stderr) goes to the
// container's log through tee, which keeps a copy, and the pipeline ends
// only when tee has written its last byte, before run writes the exit
// marker; the first srun message that names a failed task becomes the
// marker's reason, and its exit code the container's. With
// --kill-on-bad-exit a failed task ends the others, and srun exits with
// the highest code of its tasks.
func (t *translator) tasksFunction() string {
	vars := append([]string{"pod_dir", "dir"}, t.rt.vars...)
	// srun takes the job's tasks and nodes from the allocation, but not
	// what each task gets: a job submitted through slurmrestd has no
	// sbatch to leave them in the environment.
	opts := " --kill-on-bad-exit=1 --cpus-per-task=" + strconv.Itoa(t.shape.cpusPerTask)
	if t.shape.gpusPerTask > 0 {
		opts += " --gpus-per-task=" + strconv.FormatInt(t.shape.gpusPerTask, 10)
	}
	if t.shape.labels {
		opts += " --label"
	}
	return strings.NewReplacer("{OPTS}", opts, "{VARS}", strings.Join(vars, " "), "{REASON}", ReasonTaskFailed).Replace(
		`svk_tasks() { # FUNC: FUNC as every task of the job
	local err rc m
	err=$(mktemp) || return 125
	{ srun{OPTS} bash -c "$(declare -f; declare -p {VARS} 2>/dev/null)"'
svk_task=$SLURM_STEP_ID.$SLURM_PROCID
'"$1" 2>&1 1>&3 3>&- | tee "$err"; } 3>&1
	rc=${PIPESTATUS[0]}
	if [ "$rc" -ne 0 ] && m=$(grep -m1 '^srun: error: .*task' "$err"); then
		svk_reason {REASON} "${m#srun: error: }"
		# The failed task's code, not the highest: that is of a task
		# the failure ended (143, SIGTERM).
		case $m in *"Exited with exit code "[0-9]*) rc=${m##* } ;; esac
	fi
	rm -f "$err"
	return "$rc"
}
`)
}
