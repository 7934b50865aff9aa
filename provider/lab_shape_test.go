package provider

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// TestLabShape runs jobs of tasks on the lab's two nodes: srun starts the
// pod's container as every task (runtime none and podman; MPI ranks with
// Slurm's PMI2), each task's
// output is in the container's log, GPUs per task reach the tasks, a failed
// task fails the pod with srun's words, and a shape no set of nodes can
// ever hold is refused before Slurm with the numbers.
func TestLabShape(t *testing.T) {
	r := newLabRig(t)
	if len(r.lab.Nodes) < 2 {
		t.Fatalf("the lab has nodes %v: jobs of tasks need two", r.lab.Nodes)
	}
	// The node sizes, as slurm-vk's node provider reads them.
	var node corev1.Node
	np := NewNodeProvider(NodeConfig{Name: r.cfg.NodeName, Partition: r.lab.Partition}, r.slurm, &node)
	np.Prime(context.Background(), &node)
	r.cfg.NodeSizes = np.NodeSizes
	p := r.start()
	ctx := context.Background()
	shaped := func(name string, ann map[string]string, cpu, gpu string, c corev1.Container) *corev1.Pod {
		c.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
		if gpu != "" {
			c.Resources.Requests["nvidia.com/gpu"] = resource.MustParse(gpu)
		}
		pod := labPod(name, c)
		pod.Annotations = ann
		return pod
	}
	run := func(t *testing.T, pod *corev1.Pod, want corev1.PodPhase) *corev1.Pod {
		t.Helper()
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		return r.waitFor(t, pod, string(want), func(got *corev1.Pod) bool {
			if ended := got.Status.Phase == corev1.PodFailed || got.Status.Phase == corev1.PodSucceeded; ended && got.Status.Phase != want {
				t.Logf("log of %s: %q", got.Name, logsOf(t, p, got, got.Spec.Containers[0].Name, apiOpts()))
			}
			return got.Status.Phase == want
		})
	}
	// lines is the log's lines, sorted: tasks print in any order.
	lines := func(t *testing.T, pod *corev1.Pod) []string {
		l := strings.Split(strings.TrimSpace(logsOf(t, p, pod, pod.Spec.Containers[0].Name, apiOpts())), "\n")
		sort.Strings(l)
		return l
	}
	task := `echo "task $SLURM_PROCID of $SLURM_NTASKS on $SLURMD_NODENAME"`

	t.Run("2 nodes: srun runs the container on both, task labels on", func(t *testing.T) {
		pod := run(t, shaped("two", map[string]string{AnnotationNodes: "2", AnnotationTaskLabels: "true"}, "2", "", sh("main", task)), corev1.PodSucceeded)
		want := []string{"0: task 0 of 2 on " + r.lab.Nodes[0], "1: task 1 of 2 on " + r.lab.Nodes[1]}
		if got := lines(t, pod); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("logs %q, want %q", got, want)
		}
	})

	t.Run("MPI across 2 nodes: 4 ranks over Slurm's PMI2 (MPICH), an allreduce", func(t *testing.T) {
		pod := run(t, shaped("mpi", map[string]string{AnnotationNodes: "2", AnnotationTasksPerNode: "2", AnnotationMPI: "pmi2"}, "4", "",
			corev1.Container{Name: "ranks", Command: []string{"mpi-hello"}}), corev1.PodSucceeded)
		var want []string
		for rank := range 4 {
			want = append(want, fmt.Sprintf("rank %d of 4 on %s, allreduce 4", rank, r.lab.Nodes[rank/2]))
		}
		if got := lines(t, pod); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("logs %q, want %q", got, want)
		}
	})

	t.Run("GPUs per task reach the tasks on the GPU node", func(t *testing.T) {
		pod := run(t, shaped("gpus", map[string]string{AnnotationTasks: "2", AnnotationGPUsPerTask: "1"}, "2", "2",
			sh("main", `echo "$SLURMD_NODENAME gpus=$CUDA_VISIBLE_DEVICES"`)), corev1.PodSucceeded)
		gpuNode := r.lab.Nodes[len(r.lab.Nodes)-1]
		// One GPU each, and not the same one.
		want := []string{gpuNode + " gpus=0", gpuNode + " gpus=1"}
		if got := lines(t, pod); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("logs %q, want %q", got, want)
		}
	})

	t.Run("a failed task fails the pod, with srun's reason, and ends the others", func(t *testing.T) {
		pod := run(t, shaped("rank-fails", map[string]string{AnnotationNodes: "2"}, "2", "",
			sh("main", `if [ "$SLURM_PROCID" = 1 ]; then echo rank 1 fails; exit 3; fi; exec sleep 300`)), corev1.PodFailed)
		term := pod.Status.ContainerStatuses[0].State.Terminated
		if term == nil || term.ExitCode != 3 || term.Reason != ReasonTaskFailed || !strings.Contains(term.Message, "task 1") ||
			!strings.Contains(term.Message, "exit code 3") {
			t.Errorf("terminated %+v, want exit 3, reason %s naming task 1 and its exit code", term, ReasonTaskFailed)
		}
	})

	t.Run("podman: every task runs the image, with Slurm's task variables", func(t *testing.T) {
		r.lab.RequireRuntime(t, RuntimePodman)
		pod := shaped("two-podman", map[string]string{AnnotationNodes: "2", AnnotationRuntime: RuntimePodman}, "2", "",
			corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/busybox:1", Command: []string{"sh", "-c", task}})
		run(t, pod, corev1.PodSucceeded)
		want := []string{"task 0 of 2 on " + r.lab.Nodes[0], "task 1 of 2 on " + r.lab.Nodes[1]}
		if got := lines(t, pod); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("logs %q, want %q", got, want)
		}
	})

	t.Run("a shape no nodes can hold: refused before Slurm, with the numbers", func(t *testing.T) {
		n := len(r.lab.Nodes) + 1
		pod := shaped("too-many-nodes", map[string]string{AnnotationNodes: fmt.Sprint(n)}, fmt.Sprint(n), "", sh("main", "true"))
		got := run(t, pod, corev1.PodFailed)
		want := fmt.Sprintf("on %d nodes or more", n)
		have := fmt.Sprintf("partition %s has %d nodes", r.lab.Partition, len(r.lab.Nodes))
		if got.Status.Reason != ReasonNoNodeFits || !strings.Contains(got.Status.Message, want) || !strings.Contains(got.Status.Message, have) {
			t.Errorf("pod %s %q, want %s with %q and %q", got.Status.Reason, got.Status.Message, ReasonNoNodeFits, want, have)
		}
		jobs, err := r.slurm.Jobs(ctx, slurmclient.JobFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Comment == JobComment(r.cfg.NodeName, pod) {
				t.Errorf("job %d submitted for a shape no nodes can hold", j.ID)
			}
		}
	})
}
