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

// Runtimes a container can run under.
const (
	RuntimeApptainer    = "apptainer"
	RuntimeEnroot       = "enroot"
	RuntimePodman       = "podman"
	RuntimeCharliecloud = "charliecloud"
	RuntimeNone         = "none" // the command runs directly on the compute node
)
