package provider

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestLabNothingOutlivesAPod (#28): for each runtime, a pod whose
// container's PID 1 ignores TERM (no handler: PID 1 of a container
// ignores it, as on a kubelet) runs with the exec agent; the pod is
// deleted with a 3 s grace period. Once Slurm says the job ended, the
// job's user has no process left on the node: no container (podman's
// conmon and the container are not the job's own processes, which the lab's
// Slurm, without proctrack/cgroup, would leave running), no pause
// process, agent or helper.
func TestLabNothingOutlivesAPod(t *testing.T) {
	r := newLabRig(t)
	r.withAgent(t)
	p := r.start()
	// "podman-tasks": the container runs as a task on each of the lab's
	// two nodes (srun); the second is not the batch host.
	for _, name := range []string{RuntimeNone, RuntimePodman, RuntimeCharliecloud, "podman-tasks"} {
		t.Run(name, func(t *testing.T) {
			rt, tasks := strings.CutSuffix(name, "-tasks")
			if rt != RuntimeNone {
				r.lab.RequireRuntime(t, rt)
			}
			c := sh("main", "sleep 300")
			if rt != RuntimeNone {
				c = corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/busybox:1", Command: []string{"sleep", "300"}}
			}
			pod := labPod("leftover-"+name[:2]+map[bool]string{true: "-t"}[tasks], c)
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			if tasks {
				if len(r.lab.Nodes) < 2 {
					t.Fatalf("the lab has nodes %v: jobs of tasks need two", r.lab.Nodes)
				}
				pod.Annotations[AnnotationNodes] = "2"
				pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}
			}
			grace := int64(3)
			pod.Spec.TerminationGracePeriodSeconds = &grace
			if err := p.CreatePod(context.Background(), pod); err != nil {
				t.Fatal(err)
			}
			r.waitFor(t, pod, "Running", phase(corev1.PodRunning))
			job := p.jobOf(t, pod)
			if err := p.DeletePod(context.Background(), pod); err != nil {
				t.Fatal(err)
			}
			r.waitJobEnd(t, job)
			// The job has ended in Slurm; what it started goes with it (a
			// moment for the last to exit, not for anything to be killed).
			var left []string
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				if left = processesOf(r.lab.UID); len(left) == 0 || time.Now().After(deadline) {
					break
				}
			}
			if len(left) > 0 {
				t.Errorf("after the job of a deleted %s pod ended, its user still has processes:\n%s", name, strings.Join(left, "\n"))
			}
		})
	}
}

// processesOf lists the processes of uid (PID and command line).
func processesOf(uid int) []string {
	var out []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		if strings.Contains(string(status), "\nState:\tZ") {
			continue // ended; its parent has not reaped it yet
		}
		for _, line := range strings.Split(string(status), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" && f[1] == strconv.Itoa(uid) {
				cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
				out = append(out, strconv.Itoa(pid)+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
			}
		}
	}
	return out
}
