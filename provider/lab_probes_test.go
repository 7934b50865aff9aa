package provider

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestLabProbes (#29): readiness and liveness probes run by the real agent
// in a real job, in each runtime's container: the pod is Ready only while
// its readiness probe passes (a file the test makes and removes through
// exec), and a failed liveness probe restarts the container, which runs
// again, not ready, as a kubelet's would. The postStart hook has run in
// the container before anything else.
func TestLabProbes(t *testing.T) {
	r := newLabRig(t)
	r.withAgent(t)
	r.cfg.RestartBackoff, r.cfg.MaxRestartBackoff = time.Second, 2*time.Second
	p := r.start()
	for _, rt := range []string{RuntimeNone, RuntimePodman, RuntimeCharliecloud} {
		t.Run(rt, func(t *testing.T) {
			if rt != RuntimeNone {
				r.lab.RequireRuntime(t, rt)
			}
			pod := labPod("probes-"+rt[:2], corev1.Container{})
			// Files in /tmp, named for the pod: charliecloud's and none's
			// /tmp is the node's.
			f := func(what string) string { return "/tmp/" + what + "-" + string(pod.UID) }
			c := corev1.Container{Name: "main", Command: []string{"sleep", "300"},
				Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"touch", f("hooked")}}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", f("ready")}}},
					PeriodSeconds: 1, FailureThreshold: 1},
				// A liveness failure removes its cause, so that the
				// restarted container lives (none's /tmp outlives it).
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", "test ! -e " + f("die") + " || { busybox rm -f " + f("die") + " " + f("ready") + "; exit 1; }"}}},
					PeriodSeconds: 1, FailureThreshold: 1},
			}
			if rt != RuntimeNone {
				c.Image = r.lab.Registry + "/lab/busybox:1"
			}
			pod.Spec.Containers = []corev1.Container{c}
			pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
			grace := int64(2) // podman's sleep, PID 1, ignores the TERM
			pod.Spec.TerminationGracePeriodSeconds = &grace
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			r.runningPod(t, p, pod)
			exec := func(cmd ...string) {
				t.Helper()
				var out bytes.Buffer
				var err error
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
					out.Reset()
					err = p.RunInContainer(context.Background(), pod.Namespace, pod.Name, "main", cmd, &attachIO{stdout: nopCloser{&out}, stderr: nopCloser{&out}})
					if err == nil || !strings.Contains(err.Error(), "no agent") || time.Now().After(deadline) {
						break
					}
				}
				if err != nil {
					t.Fatalf("exec %q: %v: %s", cmd, err, out.String())
				}
			}
			ready := func(want bool) func(*corev1.Pod) bool {
				return func(p *corev1.Pod) bool {
					cs := p.Status.ContainerStatuses
					return p.Status.Phase == corev1.PodRunning && len(cs) == 1 && cs[0].State.Running != nil && cs[0].Ready == want && podReady(p) == want
				}
			}
			r.waitFor(t, pod, "running, not ready", ready(false))
			exec("cat", f("hooked")) // running: the postStart hook has run, in the container
			// Not ready for a while: the probe runs each second and fails.
			time.Sleep(3 * time.Second)
			if last := r.waitFor(t, pod, "running, not ready", ready(false)); podReady(last) {
				t.Fatal("ready without the file")
			}
			exec("touch", f("ready"))
			r.waitFor(t, pod, "Ready", ready(true))
			exec("busybox", "rm", f("ready"))
			r.waitFor(t, pod, "not Ready once the probe fails", ready(false))
			exec("touch", f("ready"))
			r.waitFor(t, pod, "Ready again", ready(true))
			exec("touch", f("die"))
			restarted := r.waitFor(t, pod, "restarted by its liveness probe", func(p *corev1.Pod) bool {
				cs := p.Status.ContainerStatuses
				return len(cs) == 1 && cs[0].RestartCount >= 1 && cs[0].State.Running != nil
			})
			if cs := restarted.Status.ContainerStatuses[0]; cs.Ready || cs.LastTerminationState.Terminated == nil {
				t.Errorf("after the restart: ready %v, last state %+v; want not ready (its probe has not passed) and the killed attempt", cs.Ready, cs.LastTerminationState)
			}
			exec("touch", f("ready"))
			r.waitFor(t, pod, "the restarted container Ready", ready(true))
		})
	}
}

// podReady is the pod's Ready condition.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TestLabPreStop (#29): a deleted pod's preStop hook runs, through the
// real agent, before its container gets the TERM: an httpGet hook and an
// exec hook (busybox wget, in the container) reach a server on loopback
// before the container's own TERM handler does.
func TestLabPreStop(t *testing.T) {
	r := newLabRig(t)
	r.withAgent(t)
	p := r.start()
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		seen = append(seen, req.URL.Path)
		mu.Unlock()
		if strings.HasPrefix(req.URL.Path, "/prestop") {
			time.Sleep(time.Second) // the TERM waits for the hook
		}
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	for _, rt := range []string{RuntimeNone, RuntimePodman} {
		for _, kind := range []string{"http", "exec"} {
			t.Run(rt+" "+kind, func(t *testing.T) {
				if rt != RuntimeNone {
					r.lab.RequireRuntime(t, rt)
				}
				mu.Lock()
				seen = nil
				mu.Unlock()
				wget := "busybox wget -q -O /dev/null http://127.0.0.1:" + strconv.Itoa(port)
				c := corev1.Container{Name: "main", Command: []string{"busybox", "sh", "-c", `trap '` + wget + `/term; exit 0' TERM; echo up; while :; do sleep 0.2; done`}}
				h := &corev1.LifecycleHandler{HTTPGet: &corev1.HTTPGetAction{Host: "127.0.0.1", Port: intstr.FromInt32(int32(port)), Path: "/prestop-http"}}
				if kind == "exec" {
					h = &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"busybox", "sh", "-c", wget + "/prestop-exec"}}}
				}
				c.Lifecycle = &corev1.Lifecycle{PreStop: h}
				if rt != RuntimeNone {
					c.Image = r.lab.Registry + "/lab/busybox:1"
				}
				pod := labPod("prestop-"+rt[:2]+"-"+kind, c)
				pod.Annotations = map[string]string{AnnotationRuntime: rt}
				if err := p.CreatePod(context.Background(), pod); err != nil {
					t.Fatal(err)
				}
				r.waitFor(t, pod, "running", func(p *corev1.Pod) bool {
					cs := p.Status.ContainerStatuses
					return len(cs) == 1 && cs[0].State.Running != nil
				})
				// The agent connects once the job runs (exec waits for it
				// the same way); the hook needs it.
				var out bytes.Buffer
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
					err := p.RunInContainer(context.Background(), pod.Namespace, pod.Name, "main", []string{"true"}, &attachIO{stdout: nopCloser{&out}, stderr: nopCloser{&out}})
					if err == nil {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("the agent never answered: %v", err)
					}
				}
				job := p.jobOf(t, pod)
				if err := p.DeletePod(context.Background(), pod); err != nil {
					t.Fatal(err)
				}
				r.waitJobEnd(t, job)
				mu.Lock()
				got := strings.Join(seen, " ")
				mu.Unlock()
				if want := "/prestop-" + kind + " /term"; got != want {
					t.Errorf("requests %q, want %q: the preStop hook, then the container's TERM", got, want)
				}
			})
		}
	}
}
