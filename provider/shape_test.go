package provider

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// TestShape: the shape annotations and the pod's requests (the job's
// total) become the job's nodes and tasks, or a clear refusal.
func TestShape(t *testing.T) {
	type want = slurmclient.JobSpec
	for _, tt := range []struct {
		name       string
		ann        map[string]string
		requests   corev1.ResourceList
		containers int
		cfg        func(*TranslateConfig)
		want       want   // the shape fields of the spec
		err        string // reason: message part
	}{
		{name: "2 nodes, one task each, CPUs from the request", ann: map[string]string{AnnotationNodes: "2"},
			requests: rl("4", "", ""), want: want{MinNodes: 2, MaxNodes: 2, Tasks: 2, TasksPerNode: 1, CPUsPerTask: 2}},
		{name: "tasks per node, memory per CPU from the request", ann: map[string]string{AnnotationNodes: "2", AnnotationTasksPerNode: "2"},
			requests: rl("4", "2Gi", ""), want: want{MinNodes: 2, MaxNodes: 2, Tasks: 4, TasksPerNode: 2, CPUsPerTask: 1, MemoryPerCPUMB: 512}},
		{name: "a range: the requests cover its largest end", ann: map[string]string{AnnotationNodes: "2-4"},
			requests: rl("4", "", ""), want: want{MinNodes: 2, MaxNodes: 4, TasksPerNode: 1, CPUsPerTask: 1}},
		{name: "tasks without nodes: Slurm places them", ann: map[string]string{AnnotationTasks: "3", AnnotationGPUsPerTask: "1"},
			requests: rl("3", "", "3"), want: want{Tasks: 3, CPUsPerTask: 1, GresPerTask: "gpu:1"}},
		{name: "GPUs per node and memory per node", ann: map[string]string{AnnotationNodes: "2", AnnotationGPUsPerNode: "2", AnnotationMemoryPerNode: "1Gi", AnnotationExclusive: "true"},
			requests: rl("2", "2Gi", "4"), want: want{MinNodes: 2, MaxNodes: 2, Tasks: 2, TasksPerNode: 1, CPUsPerTask: 1, MemoryMB: 1024, Gres: "gpu:2", Exclusive: true}},
		{name: "launcher none keeps several containers", ann: map[string]string{AnnotationNodes: "2", AnnotationLauncher: LauncherNone},
			requests: rl("2", "", ""), containers: 2, want: want{MinNodes: 2, MaxNodes: 2, Tasks: 2, TasksPerNode: 1, CPUsPerTask: 1}},

		{name: "no CPU request", ann: map[string]string{AnnotationNodes: "2"}, err: ReasonShapeRequests + ": the job has 2 tasks of 1 CPUs, 2 CPUs in all; the pod's cpu request must be that total (it is 0)"},
		{name: "request not a multiple of tasks", ann: map[string]string{AnnotationNodes: "2"}, requests: rl("3", "", ""),
			err: ReasonShapeRequests + ": the pod's cpu request (3) is the job's total and must divide evenly among its 2 tasks"},
		{name: "cpus-per-task disagrees", ann: map[string]string{AnnotationNodes: "2", AnnotationCPUsPerTask: "2"}, requests: rl("2", "", ""),
			err: ReasonShapeRequests + ": the job has 2 tasks of 2 CPUs, 4 CPUs in all"},
		{name: "memory per node without the request", ann: map[string]string{AnnotationNodes: "2", AnnotationMemoryPerNode: "1Gi"}, requests: rl("2", "", ""),
			err: "pod's memory request must be that total, 2Gi (it is 0)"},
		{name: "GPUs per task disagree", ann: map[string]string{AnnotationNodes: "2", AnnotationGPUsPerTask: "1"}, requests: rl("2", "", "1"),
			err: "nvidia.com/gpu request must be that total, 2 (it is 1)"},
		{name: "bad node count", ann: map[string]string{AnnotationNodes: "two"}, err: ReasonInvalidShape + `: annotation slurm-vk.io/nodes: "two" is not a whole number from 1`},
		{name: "range upside down", ann: map[string]string{AnnotationNodes: "4-2"}, err: "the range's maximum is below its minimum"},
		{name: "zero tasks", ann: map[string]string{AnnotationTasks: "0"}, err: "is not a whole number from 1"},
		{name: "both GPU annotations", ann: map[string]string{AnnotationNodes: "2", AnnotationGPUsPerTask: "1", AnnotationGPUsPerNode: "1"}, err: "give one of them"},
		{name: "per node without nodes", ann: map[string]string{AnnotationTasks: "2", AnnotationMemoryPerNode: "1Gi"}, err: "need the annotation slurm-vk.io/nodes"},
		{name: "fewer tasks than nodes", ann: map[string]string{AnnotationNodes: "3", AnnotationTasks: "2"}, err: "2 tasks cannot cover 3 nodes"},
		{name: "whole nodes only where the site allows them", ann: map[string]string{AnnotationNodes: "2", AnnotationExclusive: "true"}, requests: rl("2", "", ""),
			cfg: func(c *TranslateConfig) { c.AllowedOptions = []string{"nice"} }, err: ReasonAnnotationNotAllowed + ": annotation slurm-vk.io/exclusive: whole nodes are not allowed"},
		{name: "MPI plugin not a name", ann: map[string]string{AnnotationNodes: "1", AnnotationMPI: "pmi2 --x"}, err: `"pmi2 --x" is not the name of one of Slurm's MPI plugins`},
		{name: "MPI is srun's", ann: map[string]string{AnnotationNodes: "1", AnnotationMPI: "pmi2", AnnotationLauncher: LauncherNone}, err: "annotation slurm-vk.io/mpi is srun's"},
		{name: "bad launcher", ann: map[string]string{AnnotationLauncher: "mpirun"}, err: `"mpirun": want srun`},
		{name: "bad memory", ann: map[string]string{AnnotationMemoryPerCPU: "-1"}, err: "not a positive quantity"},
		{name: "GPUs per task over a range need a task count", ann: map[string]string{AnnotationNodes: "1-2"}, requests: rl("2", "", "2"),
			err: "GPUs per task over a range of nodes need a task count"},
		{name: "srun tasks with a runtime that starts from a clean environment", ann: map[string]string{AnnotationNodes: "2", AnnotationRuntime: RuntimeCharliecloud},
			requests: rl("2", "", ""), err: "runtime charliecloud does not pass a task's Slurm variables"},
		{name: "srun runs one container", ann: map[string]string{AnnotationNodes: "2"}, requests: rl("2", "", ""), containers: 2,
			err: "with launcher srun, the pod's one container runs as every task of the job; this pod has 2 (c0, c1)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var cs []corev1.Container
			for i := range max(tt.containers, 1) {
				cs = append(cs, corev1.Container{Name: "c" + string(rune('0'+i)), Command: []string{"true"}})
			}
			cs[0].Resources.Requests = tt.requests
			pod := basePod("shape", cs...)
			pod.Annotations = tt.ann
			cfg := testCfg
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			plan, err := Translate(pod, cfg, lookups)
			if tt.err != "" {
				var inv *InvalidPodError
				if !errors.As(err, &inv) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want an InvalidPodError with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := plan.Spec
			got := want{MinNodes: s.MinNodes, MaxNodes: s.MaxNodes, Tasks: s.Tasks, TasksPerNode: s.TasksPerNode, CPUsPerTask: s.CPUsPerTask,
				MemoryMB: s.MemoryMB, MemoryPerCPUMB: s.MemoryPerCPUMB, Gres: s.Gres, GresPerTask: s.GresPerTask, Exclusive: s.Exclusive}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("spec shape %+v, want %+v", got, tt.want)
			}
			srun := strings.Contains(s.Script, "svk_tasks c_c0")
			if srun != (tt.ann[AnnotationLauncher] != LauncherNone) {
				t.Errorf("tasks started by srun: %v, want launcher %q", srun, tt.ann[AnnotationLauncher])
			}
		})
	}
}

// rl is a resource list of CPU, memory and GPUs ("" leaves one out).
func rl(cpu, mem, gpu string) corev1.ResourceList {
	l := corev1.ResourceList{}
	for name, v := range map[corev1.ResourceName]string{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem, "nvidia.com/gpu": gpu} {
		if v != "" {
			l[name] = quantity(v)
		}
	}
	return l
}

// TestShapeFits: a job of tasks that no set of the partition's nodes can
// ever hold fails before it is submitted, with the numbers; one they can
// hold goes on.
func TestShapeFits(t *testing.T) {
	sizes := []NodeSize{{Name: "c1", CPUs: 4, MemoryMB: 8192}, {Name: "c2", CPUs: 2, MemoryMB: 4096, GPUs: 2}}
	p := New(Config{TranslateConfig: TranslateConfig{Partition: "debug"}, NodeSizes: func() []NodeSize { return sizes }}, newFakeSlurm(), noFiles{}, lookups)
	for _, tt := range []struct {
		name string
		spec slurmclient.JobSpec
		want string // "" fits
	}{
		{"2 nodes of 2 CPUs", slurmclient.JobSpec{MinNodes: 2, MaxNodes: 2, Tasks: 2, TasksPerNode: 1, CPUsPerTask: 2}, ""},
		{"5 tasks spread unevenly (4 + 1)", slurmclient.JobSpec{MinNodes: 2, MaxNodes: 2, Tasks: 5, CPUsPerTask: 1}, ""},
		{"6 tasks: every CPU", slurmclient.JobSpec{Tasks: 6, CPUsPerTask: 1}, ""},
		{"GPUs per task on the GPU node", slurmclient.JobSpec{Tasks: 2, CPUsPerTask: 1, GresPerTask: "gpu:1"}, ""},
		{"3 nodes of 2", slurmclient.JobSpec{MinNodes: 3, MaxNodes: 3, Tasks: 3, TasksPerNode: 1},
			"the job needs 3 tasks of 1 CPUs, 0 memory, 0 GPUs each on 3 nodes or more (each node at least 1 tasks: 1 CPUs, 0 memory, 0 GPUs); partition debug has 2 nodes, 2 of them large enough, which hold 2 of its tasks (c1: 4 CPUs, 8Gi memory, 0 GPUs; c2: 2 CPUs, 4Gi memory, 2 GPUs)"},
		{"3 CPUs per node on 2 nodes", slurmclient.JobSpec{MinNodes: 2, MaxNodes: 2, Tasks: 2, TasksPerNode: 1, CPUsPerTask: 3}, "1 of them large enough"},
		{"7 tasks", slurmclient.JobSpec{Tasks: 7, CPUsPerTask: 1}, "which hold 6 of its tasks"},
		{"with a task count, tasks per node is a maximum (2 + 1)", slurmclient.JobSpec{MinNodes: 2, MaxNodes: 2, Tasks: 3, TasksPerNode: 2, CPUsPerTask: 2}, ""},
		{"GPUs per node on 2 nodes", slurmclient.JobSpec{MinNodes: 2, MaxNodes: 2, Tasks: 2, Gres: "gpu:1"}, "1 of them large enough"},
		{"3 GPU tasks", slurmclient.JobSpec{Tasks: 3, GresPerTask: "gpu:1"}, "which hold 2 of its tasks"},
		{"one task, too big: the annotation is named", slurmclient.JobSpec{CPUsPerTask: 5}, "spread it over nodes with the annotation " + AnnotationNodes},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Partition = "debug"
			got := p.noNodeFits(tt.spec)
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("noNodeFits = %q, want %q", got, tt.want)
			}
		})
	}
}
