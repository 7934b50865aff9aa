package provider

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Reasons a pod's job shape is refused.
const (
	ReasonInvalidShape  = "InvalidJobShape"
	ReasonShapeRequests = "JobShapeMismatch"
)

// shapeAnnotations are the annotations that give a pod a job shape.
var shapeAnnotations = []string{AnnotationNodes, AnnotationTasks, AnnotationTasksPerNode, AnnotationCPUsPerTask,
	AnnotationGPUsPerTask, AnnotationGPUsPerNode, AnnotationMemoryPerNode, AnnotationMemoryPerCPU,
	AnnotationExclusive, AnnotationLauncher, AnnotationTaskLabels, AnnotationMPI}

// shape is a job over one or more nodes, as the pod's annotations and
// requests give it. The pod's requests are the job's total (the Kubernetes
// scheduler accounts them against the virtual node); the annotations say
// how the total is cut into nodes and tasks, and must agree with it.
type shape struct {
	minNodes, maxNodes int
	tasks              int // 0: tasksPerNode on each node
	tasksPerNode       int // 0: unset
	cpusPerTask        int
	gpusPerTask        int64
	gpusPerNode        int64
	memPerNodeMB       int64
	memPerCPUMB        int64
	exclusive          bool
	launcher           string // LauncherSrun or LauncherNone
	labels             bool   // srun --label
	mpi                string // srun --mpi: Slurm's MPI plugin; "": its MpiDefault
}

// mpiPlugin is the form of Slurm's MPI plugin names (pmi2, pmix_v5, none).
var mpiPlugin = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

// parseShape reads the pod's shape annotations; nil when it has none (one
// task on one node, as every pod without them).
func parseShape(pod *corev1.Pod) (*shape, error) {
	a := pod.Annotations
	has := false
	for _, k := range shapeAnnotations {
		if _, ok := a[k]; ok {
			has = true
		}
	}
	if !has {
		return nil, nil
	}
	s := &shape{launcher: LauncherSrun}
	var err error
	if v, ok := a[AnnotationNodes]; ok {
		lo, hi, cut := strings.Cut(v, "-")
		if s.minNodes, err = count(AnnotationNodes, lo); err != nil {
			return nil, err
		}
		s.maxNodes = s.minNodes
		if cut {
			if s.maxNodes, err = count(AnnotationNodes, hi); err != nil {
				return nil, err
			}
			if s.maxNodes < s.minNodes {
				return nil, invalid(ReasonInvalidShape, "annotation %s: %q: the range's maximum is below its minimum", AnnotationNodes, v)
			}
		}
	}
	for _, c := range []struct {
		key string
		dst *int
	}{{AnnotationTasks, &s.tasks}, {AnnotationTasksPerNode, &s.tasksPerNode}, {AnnotationCPUsPerTask, &s.cpusPerTask}} {
		if v, ok := a[c.key]; ok {
			if *c.dst, err = count(c.key, v); err != nil {
				return nil, err
			}
		}
	}
	for _, c := range []struct {
		key string
		dst *int64
	}{{AnnotationGPUsPerTask, &s.gpusPerTask}, {AnnotationGPUsPerNode, &s.gpusPerNode}} {
		if v, ok := a[c.key]; ok {
			n, err := count(c.key, v)
			if err != nil {
				return nil, err
			}
			*c.dst = int64(n)
		}
	}
	for _, c := range []struct {
		key string
		dst *int64
	}{{AnnotationMemoryPerNode, &s.memPerNodeMB}, {AnnotationMemoryPerCPU, &s.memPerCPUMB}} {
		if v, ok := a[c.key]; ok {
			q, err := resource.ParseQuantity(v)
			if err != nil || q.Sign() <= 0 || q.Value() > 1<<50 {
				return nil, invalid(ReasonInvalidShape, "annotation %s: %q is not a positive quantity such as 4Gi", c.key, v)
			}
			*c.dst = mebibytes(q.Value())
		}
	}
	for _, c := range []struct {
		key string
		dst *bool
	}{{AnnotationExclusive, &s.exclusive}, {AnnotationTaskLabels, &s.labels}} {
		if v, ok := a[c.key]; ok {
			if *c.dst, err = strconv.ParseBool(v); err != nil {
				return nil, invalid(ReasonInvalidShape, "annotation %s: %q: want true or false", c.key, v)
			}
		}
	}
	if v, ok := a[AnnotationLauncher]; ok {
		if v != LauncherSrun && v != LauncherNone {
			return nil, invalid(ReasonInvalidShape, "annotation %s: %q: want %s (every task runs the container) or %s (the container runs once and starts the tasks itself)", AnnotationLauncher, v, LauncherSrun, LauncherNone)
		}
		s.launcher = v
	}
	if s.minNodes == 0 {
		// Without a node count, tasks go where Slurm finds room.
		if s.tasks == 0 {
			s.minNodes, s.maxNodes = 1, 1
		}
		if s.gpusPerNode > 0 || s.memPerNodeMB > 0 {
			return nil, invalid(ReasonInvalidShape, "amounts per node (%s, %s) need the annotation %s", AnnotationGPUsPerNode, AnnotationMemoryPerNode, AnnotationNodes)
		}
	}
	if v, ok := a[AnnotationMPI]; ok {
		if !mpiPlugin.MatchString(v) {
			return nil, invalid(ReasonInvalidShape, "annotation %s: %q is not the name of one of Slurm's MPI plugins (pmi2, pmix, none)", AnnotationMPI, v)
		}
		if s.launcher != LauncherSrun {
			return nil, invalid(ReasonInvalidShape, "annotation %s is srun's: with %s: %s the container starts the tasks itself", AnnotationMPI, AnnotationLauncher, s.launcher)
		}
		s.mpi = v
	}
	if s.gpusPerTask > 0 && s.gpusPerNode > 0 {
		return nil, invalid(ReasonInvalidShape, "annotations %s and %s: give one of them", AnnotationGPUsPerTask, AnnotationGPUsPerNode)
	}
	if s.memPerNodeMB > 0 && s.memPerCPUMB > 0 {
		return nil, invalid(ReasonInvalidShape, "annotations %s and %s: give one of them", AnnotationMemoryPerNode, AnnotationMemoryPerCPU)
	}
	if s.tasks > 0 && s.tasks < s.minNodes {
		return nil, invalid(ReasonInvalidShape, "%d tasks cannot cover %d nodes: each node runs at least one task", s.tasks, s.minNodes)
	}
	if s.tasks > 0 && s.tasksPerNode > 0 && s.maxNodes > 0 && s.tasks > s.tasksPerNode*s.maxNodes {
		return nil, invalid(ReasonInvalidShape, "%d tasks do not fit %d nodes of %d tasks each", s.tasks, s.maxNodes, s.tasksPerNode)
	}
	return s, nil
}

// count parses a positive whole number of an annotation.
func count(key, v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 1 || n > 65535 { // Slurm's counts are 16-bit
		return 0, invalid(ReasonInvalidShape, "annotation %s: %q is not a whole number from 1", key, v)
	}
	return n, nil
}

func mebibytes(b int64) int64 { return int64(math.Ceil(float64(b) / (1 << 20))) }

// maxTasks is the most tasks the job has: the total the requests cover.
func (s *shape) maxTasks() int {
	if s.tasks > 0 {
		return s.tasks
	}
	return max(s.tasksPerNode, 1) * s.maxNodes
}

// fit cuts the pod's requests (CPU in millicores, memory in bytes, GPUs)
// into the shape, and refuses a shape that disagrees with them: the
// requests are the job's total, so the Kubernetes scheduler accounts the
// whole job.
func (s *shape) fit(cpuMilli, memBytes, gpus int64) error {
	tasks := int64(s.maxTasks())
	cpus := int64(math.Ceil(float64(cpuMilli) / 1000))
	if s.cpusPerTask == 0 {
		if cpus%tasks != 0 {
			return invalid(ReasonShapeRequests, "the pod's cpu request (%d) is the job's total and must divide evenly among its %d tasks: request a multiple of %d CPUs, or set %s", cpus, tasks, tasks, AnnotationCPUsPerTask)
		}
		s.cpusPerTask = int(max(cpus/tasks, 1))
	}
	if want := tasks * int64(s.cpusPerTask); cpus != want {
		return invalid(ReasonShapeRequests, "the job has %d tasks of %d CPUs, %d CPUs in all; the pod's cpu request must be that total (it is %d), so that the Kubernetes scheduler accounts the whole job", tasks, s.cpusPerTask, want, cpus)
	}
	allCPUs := tasks * int64(s.cpusPerTask)
	mem := mebibytes(memBytes)
	switch {
	case s.memPerNodeMB > 0 && mem != s.memPerNodeMB*int64(s.maxNodes):
		return invalid(ReasonShapeRequests, "the job has %d nodes of %s memory; the pod's memory request must be that total, %s (it is %s)", s.maxNodes, memory(s.memPerNodeMB), memory(s.memPerNodeMB*int64(s.maxNodes)), memory(mem))
	case s.memPerCPUMB > 0 && mem != s.memPerCPUMB*allCPUs:
		return invalid(ReasonShapeRequests, "the job has %d CPUs of %s memory each; the pod's memory request must be that total, %s (it is %s)", allCPUs, memory(s.memPerCPUMB), memory(s.memPerCPUMB*allCPUs), memory(mem))
	case s.memPerNodeMB == 0 && s.memPerCPUMB == 0 && mem > 0:
		s.memPerCPUMB = (mem + allCPUs - 1) / allCPUs
	}
	switch {
	case s.gpusPerTask > 0 && gpus != s.gpusPerTask*tasks:
		return invalid(ReasonShapeRequests, "the job has %d tasks of %d GPUs; the pod's nvidia.com/gpu request must be that total, %d (it is %d)", tasks, s.gpusPerTask, s.gpusPerTask*tasks, gpus)
	case s.gpusPerNode > 0 && gpus != s.gpusPerNode*int64(s.maxNodes):
		return invalid(ReasonShapeRequests, "the job has %d nodes of %d GPUs; the pod's nvidia.com/gpu request must be that total, %d (it is %d)", s.maxNodes, s.gpusPerNode, s.gpusPerNode*int64(s.maxNodes), gpus)
	case s.gpusPerTask == 0 && s.gpusPerNode == 0 && gpus > 0:
		if gpus%tasks != 0 {
			return invalid(ReasonShapeRequests, "the pod's nvidia.com/gpu request (%d) is the job's total and must divide evenly among its %d tasks: request a multiple of %d, or set %s", gpus, tasks, tasks, AnnotationGPUsPerNode)
		}
		s.gpusPerTask = gpus / tasks
	}
	if s.gpusPerTask > 0 && s.tasks == 0 && s.minNodes != s.maxNodes {
		return invalid(ReasonInvalidShape, "GPUs per task over a range of nodes need a task count (Slurm's rule): set %s, or use %s", AnnotationTasks, AnnotationGPUsPerNode)
	}
	return nil
}

// apply writes the shape into the job description.
func (s *shape) apply(spec *slurmclient.JobSpec) {
	spec.MinNodes, spec.MaxNodes = s.minNodes, s.maxNodes
	spec.CPUsPerTask = s.cpusPerTask
	switch {
	case s.tasks > 0:
		spec.Tasks = s.tasks
	case s.minNodes == s.maxNodes:
		spec.Tasks = s.maxTasks()
	}
	if s.tasksPerNode > 0 || s.tasks == 0 {
		spec.TasksPerNode = max(s.tasksPerNode, 1)
	}
	spec.MemoryMB, spec.MemoryPerCPUMB = s.memPerNodeMB, s.memPerCPUMB
	spec.Gres, spec.GresPerTask = "", ""
	if s.gpusPerNode > 0 {
		spec.Gres = fmt.Sprintf("gpu:%d", s.gpusPerNode)
	}
	if s.gpusPerTask > 0 {
		spec.GresPerTask = fmt.Sprintf("gpu:%d", s.gpusPerTask)
	}
	spec.Exclusive = s.exclusive
}

// containers checks the pod's containers against the launcher: srun runs
// one container as every task; init containers run once before it, in the
// job's first node's batch step.
func (s *shape) containers(pod *corev1.Pod, runtime string) error {
	if s.launcher != LauncherSrun {
		return nil
	}
	// Tasks tell ranks apart by Slurm's variables: runtimes that start the
	// container from a clean environment would make every task rank 0.
	if runtime != RuntimeNone && runtime != RuntimePodman {
		return invalid(ReasonInvalidShape, "launcher %s runs tasks with runtimes %s and %s; runtime %s does not pass a task's Slurm variables into its container: use %s: %s and start the tasks inside the container", LauncherSrun, RuntimeNone, RuntimePodman, runtime, AnnotationLauncher, LauncherNone)
	}
	if len(pod.Spec.Containers) == 1 {
		return nil
	}
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	return invalid(ReasonInvalidShape, "with launcher %s, the pod's one container runs as every task of the job; this pod has %d (%s): run the others in their own pod, or use %s: %s", LauncherSrun, len(names), strings.Join(names, ", "), AnnotationLauncher, LauncherNone)
}
