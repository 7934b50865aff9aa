package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestE2EShape: jobs of tasks over the lab's two nodes, through kubectl:
// the pod's container runs as a task on each node, kubectl logs shows
// both, kubectl delete ends every task; a batch/v1 Job of two-node MPI
// pods completes.
func TestE2EShape(t *testing.T) {
	c := setup(t)
	if len(c.lab.Nodes) < 2 {
		t.Fatalf("the lab has nodes %v: jobs of tasks need two", c.lab.Nodes)
	}
	// shaped is a pod of one task per node on both nodes, with Slurm's
	// task labels, running script.
	shaped := func(name, script string) string {
		return strings.Replace(podOn(nodeName, name, script), "metadata:\n  name: "+name+"\n",
			"metadata:\n  name: "+name+"\n  annotations:\n    slurm-vk.io/nodes: \"2\"\n    slurm-vk.io/task-labels: \"true\"\n", 1) +
			"    resources:\n      requests:\n        cpu: \"2\"\n"
	}

	t.Run("a pod over two nodes: logs show both, delete ends every task", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "two-nodes")
		// A sleep no other test runs, to find the tasks' processes by.
		const marker = "sleep 617"
		c.apply(shaped(name, `echo "task $SLURM_PROCID on $SLURMD_NODENAME"; exec `+marker))
		c.waitFor("Running", 2*time.Minute, func() bool { return c.phase(name) == "Running" })
		var logs string
		c.waitFor("both tasks' lines in kubectl logs", time.Minute, func() bool {
			logs, _ = c.kubectl("logs", name)
			return strings.Contains(logs, "0: task 0 on "+c.lab.Nodes[0]) && strings.Contains(logs, "1: task 1 on "+c.lab.Nodes[1])
		})
		if tasks := processes(t, marker); tasks != 2 {
			t.Fatalf("%d processes run %q, want one per task (2)", tasks, marker)
		}
		uid := c.must("get", "pod", name, "-o", "jsonpath={.metadata.uid}")
		c.must("delete", "pod", name, "--wait=true", "--timeout=90s")
		c.waitFor("the job to end in Slurm", time.Minute, func() bool { return c.slurmJob(uid).State.Terminal() })
		c.waitFor("every task's process to end", time.Minute, func() bool { return processes(t, marker) == 0 })
	})

	t.Run("a batch/v1 Job of two-node MPI pods completes", func(t *testing.T) {
		c.t = t
		name := fmt.Sprintf("shaped-batch-%d", time.Now().UnixNano()%1000000)
		t.Cleanup(func() { c.kubectl("delete", "job", name, "--wait=false", "--ignore-not-found") })
		c.apply(fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: %s
spec:
  completions: 2
  parallelism: 1
  backoffLimit: 0
  template:
    metadata:
      annotations:
        slurm-vk.io/nodes: "2"
        slurm-vk.io/mpi: pmi2
    spec:
      nodeSelector:
        kubernetes.io/hostname: %s
      tolerations:
      - key: virtual-kubelet.io/provider
        operator: Exists
      restartPolicy: Never
      containers:
      - name: ranks
        image: none
        command: ["mpi-hello"]
        resources:
          requests:
            cpu: "2"
`, name, nodeName))
		c.waitFor("2 completions", 3*time.Minute, func() bool {
			out, _ := c.kubectl("get", "job", name, "-o", "jsonpath={.status.succeeded}")
			return out == "2"
		})
		// Every pod's ranks found each other: a world of 2, one rank per node.
		pods := strings.Fields(c.must("get", "pods", "-l", "job-name="+name, "-o", "jsonpath={.items[*].metadata.name}"))
		if len(pods) != 2 {
			t.Fatalf("the Job's pods %v, want 2", pods)
		}
		for _, p := range pods {
			logs := c.must("logs", p)
			for rank, node := range c.lab.Nodes[:2] {
				if want := fmt.Sprintf("rank %d of 2 on %s, allreduce 2", rank, node); !strings.Contains(logs, want) {
					t.Errorf("pod %s's logs %q, want %q", p, logs, want)
				}
			}
		}
	})

	t.Run("a shape that disagrees with the requests fails with the numbers", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "bad-shape")
		c.apply(strings.Replace(shaped(name, "true"), "cpu: \"2\"", "cpu: \"3\"", 1))
		c.waitFor("Failed", 2*time.Minute, func() bool { return c.phase(name) == "Failed" })
		if got := c.must("get", "pod", name, "-o", "jsonpath={.status.reason}: {.status.message}"); !strings.HasPrefix(got, "JobShapeMismatch: the pod's cpu request (3) is the job's total and must divide evenly among its 2 tasks") {
			t.Errorf("status %q, want JobShapeMismatch with the numbers", got)
		}
	})
}

// processes counts the processes whose command line is cmdline (from
// /proc: the lab's jobs run on this host).
func processes(t *testing.T, cmdline string) int {
	want := strings.ReplaceAll(cmdline, " ", "\x00") + "\x00"
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, d := range dirs {
		if b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline")); err == nil && string(b) == want {
			n++
		}
	}
	return n
}
