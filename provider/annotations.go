package provider

// Annotations a pod may carry to steer its job.
const (
	AnnotationPrefix      = "slurm-vk.io/"
	AnnotationPartition   = AnnotationPrefix + "partition"
	AnnotationAccount     = AnnotationPrefix + "account"
	AnnotationQOS         = AnnotationPrefix + "qos"
	AnnotationReservation = AnnotationPrefix + "reservation"
	AnnotationConstraint  = AnnotationPrefix + "constraint"
	AnnotationRuntime     = AnnotationPrefix + "runtime"
	// AnnotationOptions is a JSON object of further job description fields
	// (slurmrestd names), each of which must be in Config.AllowedOptions.
	AnnotationOptions = AnnotationPrefix + "options"
)

// Annotations of a job's shape over nodes and tasks (shape.go). A pod with
// any of them is a job of tasks; the pod's requests are the job's total.
const (
	AnnotationNodes         = AnnotationPrefix + "nodes" // N, or MIN-MAX
	AnnotationTasks         = AnnotationPrefix + "tasks" // in all
	AnnotationTasksPerNode  = AnnotationPrefix + "tasks-per-node"
	AnnotationCPUsPerTask   = AnnotationPrefix + "cpus-per-task"
	AnnotationGPUsPerTask   = AnnotationPrefix + "gpus-per-task"
	AnnotationGPUsPerNode   = AnnotationPrefix + "gpus-per-node"
	AnnotationMemoryPerNode = AnnotationPrefix + "memory-per-node" // a quantity: 4Gi
	AnnotationMemoryPerCPU  = AnnotationPrefix + "memory-per-cpu"
	AnnotationExclusive     = AnnotationPrefix + "exclusive" // whole nodes
	AnnotationLauncher      = AnnotationPrefix + "launcher"  // LauncherSrun or LauncherNone
	AnnotationTaskLabels    = AnnotationPrefix + "task-labels"
	AnnotationMPI           = AnnotationPrefix + "mpi" // srun --mpi: pmi2, pmix, ...
)

// Launchers of a job with a shape.
const (
	LauncherSrun = "srun" // srun runs the pod's container as every task
	LauncherNone = "none" // the container runs once and starts the tasks itself (mpirun)
)

// Runtimes a container can run under.
const (
	RuntimeApptainer    = "apptainer"
	RuntimeEnroot       = "enroot"
	RuntimePodman       = "podman"
	RuntimeCharliecloud = "charliecloud"
	RuntimeNone         = "none" // the command runs directly on the compute node
)
