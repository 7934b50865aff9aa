package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/server"
	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/test/labenv"
)

// labRig is a provider wired to the real lab: slurmrestd through
// slurmclient, and a real fetch endpoint on the lab's shared directory
// (running as root here, so it hands what it creates to the job user).
type labRig struct {
	t     *testing.T
	lab   *labenv.Lab
	slurm *slurmclient.Client
	files *fetchclient.Client
	cfg   Config
	look  Lookups
	// fetchURL and fetchToken reach the rig's fetch endpoint.
	fetchURL, fetchToken string

	mu      sync.Mutex
	updates map[types.UID][]*corev1.Pod
}

func newLabRig(t *testing.T) *labRig {
	lab := labenv.Require(t)
	root, err := os.MkdirTemp(lab.Shared, "provider-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(root, lab.UID, lab.UID)
	t.Cleanup(func() { os.RemoveAll(root) })
	tok := root + "/.fetch-token"
	os.WriteFile(tok, []byte("provider-lab-token"), 0o600)
	url := fetchtest.Start(t, server.Config{Root: root, TokenFile: tok, Owner: &server.Owner{UID: lab.UID, GID: lab.UID},
		PollInterval: 100 * time.Millisecond})
	files, err := fetchclient.New(fetchclient.Config{URL: url, TokenFile: tok, Wait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	slurm, err := slurmclient.New(slurmclient.Config{URL: lab.URL, User: lab.User, TokenFile: lab.TokenFile})
	if err != nil {
		t.Fatal(err)
	}
	return &labRig{t: t, lab: lab, slurm: slurm, files: files, updates: map[types.UID][]*corev1.Pod{}, look: lookups, fetchURL: url, fetchToken: tok,
		cfg: Config{TranslateConfig: TranslateConfig{NodeName: "lab-" + lab.Suite, Partition: lab.Partition,
			SharedRoot: root, Runtime: RuntimeNone, Allowed: Allowed{Runtimes: []string{AllowAny}, Partitions: []string{AllowAny}}},
			StatusInterval: 200 * time.Millisecond}}
}

// ctx is a context that ends with the test.
func (r *labRig) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx
}

func apiOpts() api.ContainerLogOpts { return api.ContainerLogOpts{} }

// start runs a provider until the test ends.
func (r *labRig) start() *Provider {
	p, _ := r.startStoppable()
	return p
}

// startStoppable runs a provider until stop is called or the test ends.
func (r *labRig) startStoppable() (p *Provider, stop func()) {
	p = New(r.cfg, r.slurm, r.files, r.look)
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	p.NotifyPods(ctx, r.record)
	return p, cancel
}

// forget drops the status updates recorded for pod so far.
func (r *labRig) forget(pod *corev1.Pod) {
	r.mu.Lock()
	delete(r.updates, pod.UID)
	r.mu.Unlock()
}

// record keeps a status update a provider sent.
func (r *labRig) record(pod *corev1.Pod) {
	r.mu.Lock()
	r.updates[pod.UID] = append(r.updates[pod.UID], pod)
	r.mu.Unlock()
}

var podSeq int

func labPod(name string, containers ...corev1.Container) *corev1.Pod {
	podSeq++
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name,
			UID: types.UID(fmt.Sprintf("%08x-0000-4000-8000-%012d", time.Now().UnixNano()&0xffffffff, podSeq))},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: containers},
	}
}

// waitFor waits until the pod's latest notified status satisfies ok.
func (r *labRig) waitFor(t *testing.T, pod *corev1.Pod, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		u := r.updates[pod.UID]
		var last *corev1.Pod
		if len(u) > 0 {
			last = u[len(u)-1]
		}
		r.mu.Unlock()
		if last != nil && ok(last) {
			return last
		}
		if last != nil && (last.Status.Phase == corev1.PodSucceeded || last.Status.Phase == corev1.PodFailed) {
			t.Fatalf("pod %s ended %s (%s: %s) and never %s; containers %+v", pod.Name, last.Status.Phase, last.Status.Reason, last.Status.Message, what, last.Status.ContainerStatuses)
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	u := r.updates[pod.UID]
	if len(u) > 0 {
		t.Fatalf("pod %s never %s; last status: %s %s %s %+v", pod.Name, what, u[len(u)-1].Status.Phase, u[len(u)-1].Status.Reason, u[len(u)-1].Status.Message, u[len(u)-1].Status.ContainerStatuses)
	}
	t.Fatalf("pod %s never %s; no status at all", pod.Name, what)
	return nil
}

// succeeded creates the pod, waits until it has succeeded, and returns
// its container main's log.
func (r *labRig) succeeded(t *testing.T, p *Provider, pod *corev1.Pod) string {
	t.Helper()
	if err := p.CreatePod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, pod, "Succeeded", phase(corev1.PodSucceeded))
	return logsOf(t, p, pod, "main", apiOpts())
}

func phase(ph corev1.PodPhase) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Status.Phase == ph }
}

func logsOf(t *testing.T, p *Provider, pod *corev1.Pod, container string, opts api.ContainerLogOpts) string {
	t.Helper()
	rc, err := p.GetContainerLogs(context.Background(), pod.Namespace, pod.Name, container, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sh(name, script string) corev1.Container {
	return corev1.Container{Name: name, Command: []string{"/bin/sh", "-c", script}}
}

func TestLabProvider(t *testing.T) {
	r := newLabRig(t)
	p := r.start()
	ctx := context.Background()

	t.Run("success with logs, config and secret", func(t *testing.T) {
		pod := labPod("hello", corev1.Container{Name: "main", Command: []string{"/bin/sh", "-c",
			`for i in 1 2 3; do echo "line $i"; sleep 0.2; done; echo "mode=$MODE"; cat "$SLURM_VK_MOUNT_CONFIG/app.yaml"; test "$DB_PASSWORD" = 'hunter2-TOP-SECRET
' && echo secret-ok`},
			Env: []corev1.EnvVar{
				{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "MODE"}}},
				{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}}})
		pod.Spec.Volumes = []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}}}
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, pod, "running", func(p *corev1.Pod) bool {
			return p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded
		})
		// Follow from the start: the stream ends by itself with the container.
		got := logsOf(t, p, pod, "main", api.ContainerLogOpts{Follow: true})
		want := "line 1\nline 2\nline 3\nmode=fast\nlevel: debug\nsecret-ok\n"
		if got != want {
			t.Errorf("logs -f: %q, want %q", got, want)
		}
		done := r.waitFor(t, pod, "succeeded", phase(corev1.PodSucceeded))
		cs := done.Status.ContainerStatuses[0].State.Terminated
		if cs == nil || cs.ExitCode != 0 || cs.FinishedAt.IsZero() || cs.StartedAt.IsZero() {
			t.Errorf("container status %+v", done.Status.ContainerStatuses[0])
		}
		if got := logsOf(t, p, pod, "main", api.ContainerLogOpts{Tail: 2}); got != "level: debug\nsecret-ok\n" {
			t.Errorf("logs --tail=2: %q", got)
		}
	})

	t.Run("non-zero exit", func(t *testing.T) {
		pod := labPod("fails", sh("main", "echo about to fail; exit 3"))
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		done := r.waitFor(t, pod, "failed", phase(corev1.PodFailed))
		if ts := done.Status.ContainerStatuses[0].State.Terminated; ts == nil || ts.ExitCode != 3 {
			t.Errorf("container %+v, want exit code 3", done.Status.ContainerStatuses[0])
		}
	})

	t.Run("init container failure stops the pod", func(t *testing.T) {
		pod := labPod("initfail", sh("main", "echo must-not-run"))
		pod.Spec.InitContainers = []corev1.Container{sh("setup", "echo setting up; exit 7")}
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		done := r.waitFor(t, pod, "failed", phase(corev1.PodFailed))
		if ts := done.Status.InitContainerStatuses[0].State.Terminated; ts == nil || ts.ExitCode != 7 {
			t.Errorf("init container %+v, want exit code 7", done.Status.InitContainerStatuses[0])
		}
		if done.Status.ContainerStatuses[0].State.Terminated != nil {
			t.Errorf("main container ran: %+v", done.Status.ContainerStatuses[0])
		}
		if got := logsOf(t, p, pod, "setup", api.ContainerLogOpts{}); got != "setting up\n" {
			t.Errorf("init logs %q", got)
		}
	})

	t.Run("multi-container with separate logs", func(t *testing.T) {
		pod := labPod("multi", sh("web", "echo from-web"), sh("worker", "echo from-worker >&2; sleep 2; echo done"))
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		done := r.waitFor(t, pod, "succeeded", phase(corev1.PodSucceeded))
		// Each container's finish time is its own marker's, not the job's
		// end (which Slurm truncates to the second), whichever second the
		// job ended in: compared with the markers themselves, no clock.
		for _, cs := range done.Status.ContainerStatuses {
			if cs.State.Terminated == nil {
				t.Fatalf("%s: %+v", cs.Name, cs.State)
			}
			fi, err := os.Stat(PodRef(pod).Path(r.cfg.SharedRoot, layout.ExitFile(cs.Name, 0)))
			if err != nil {
				t.Fatal(err)
			}
			if got := cs.State.Terminated.FinishedAt.Time; !got.Equal(fi.ModTime()) {
				t.Errorf("%s finished at %v, its marker was written at %v", cs.Name, got, fi.ModTime())
			}
		}
		if got := logsOf(t, p, pod, "web", api.ContainerLogOpts{}); got != "from-web\n" {
			t.Errorf("web: %q", got)
		}
		if got := logsOf(t, p, pod, "worker", api.ContainerLogOpts{}); got != "from-worker\ndone\n" {
			t.Errorf("worker: %q", got)
		}
	})

	t.Run("waiting for resources shows Slurm's reason", func(t *testing.T) {
		hog := labPod("hog", sh("main", "sleep 30"))
		if err := p.CreatePod(ctx, hog); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, hog, "running", phase(corev1.PodRunning))
		big := labPod("big", corev1.Container{Name: "main", Command: []string{"true"}, Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(fmt.Sprint(r.lab.CPUs))}}})
		if err := p.CreatePod(ctx, big); err != nil {
			t.Fatal(err)
		}
		pending := r.waitFor(t, big, "pending on resources", func(p *corev1.Pod) bool {
			w := p.Status.ContainerStatuses[0].State.Waiting
			return p.Status.Phase == corev1.PodPending && w != nil && w.Reason == "Resources"
		})
		if !strings.Contains(pending.Status.Message, "Resources") {
			t.Errorf("pod message %q", pending.Status.Message)
		}
		for _, pod := range []*corev1.Pod{hog, big} {
			if err := p.DeletePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("more CPUs than any node has: refused before Slurm, with the numbers", func(t *testing.T) {
		// Slurm 24.11 refuses such a job at submit and 26.05 queues it for
		// ever: the provider, which knows the nodes, says so first.
		var node corev1.Node
		np := NewNodeProvider(NodeConfig{Name: r.cfg.NodeName, Partition: r.lab.Partition}, r.slurm, &node)
		np.Prime(ctx, &node)
		cfg := r.cfg
		cfg.NodeSizes = np.NodeSizes
		sized := New(cfg, r.slurm, r.files, r.look)
		sized.NotifyPods(r.ctx(t), r.record)
		pod := labPod("toobig", corev1.Container{Name: "main", Command: []string{"true"}, Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(fmt.Sprint(r.lab.CPUs + 1))}}})
		if err := sized.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		got := r.waitFor(t, pod, "failed", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodFailed })
		want := fmt.Sprintf("the pod needs %d CPUs", r.lab.CPUs+1)
		if got.Status.Reason != ReasonNoNodeFits || !strings.Contains(got.Status.Message, want) || !strings.Contains(got.Status.Message, fmt.Sprintf("at most %d CPUs", r.lab.CPUs)) {
			t.Errorf("pod %s %q, want %s naming %d CPUs needed and %d on the largest node", got.Status.Reason, got.Status.Message, ReasonNoNodeFits, r.lab.CPUs+1, r.lab.CPUs)
		}
		jobs, err := r.slurm.Jobs(ctx, slurmclient.JobFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Comment == JobComment(r.cfg.NodeName, pod) {
				t.Errorf("job %d submitted for a pod no node can hold", j.ID)
			}
		}
	})

	t.Run("delete while running cancels the job", func(t *testing.T) {
		pod := labPod("victim", sh("main", "echo running; sleep 300"))
		grace := int64(1)
		pod.Spec.TerminationGracePeriodSeconds = &grace
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, pod, "running", phase(corev1.PodRunning))
		st, _ := p.get(pod.Namespace, pod.Name)
		job := st.job
		if err := p.DeletePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		final := r.waitFor(t, pod, "terminated", phase(corev1.PodFailed))
		if final.Status.ContainerStatuses[0].State.Terminated == nil {
			t.Errorf("after delete: %+v", final.Status.ContainerStatuses[0])
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			j, err := r.slurm.Job(ctx, job)
			if err != nil && !errors.Is(err, slurmclient.ErrNotFound) {
				t.Fatal(err)
			}
			if err != nil || j.State.Terminal() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %d still %s after the pod was deleted", job, j.State)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := p.DeletePod(ctx, pod); err == nil {
			t.Error("a second delete of a gone pod should say not found")
		}
	})

	t.Run("rejected by Slurm: failed with Slurm's message, nothing submitted", func(t *testing.T) {
		pod := labPod("badpart", sh("main", "true"))
		pod.Annotations = map[string]string{AnnotationPartition: "no-such-partition"}
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		done := r.waitFor(t, pod, "failed", phase(corev1.PodFailed))
		if done.Status.Reason != ReasonRejected || !strings.Contains(done.Status.Message, "Invalid partition") {
			t.Errorf("status %s: %s", done.Status.Reason, done.Status.Message)
		}
	})
}

// TestLabProviderRestart: a provider killed mid-run and started again
// re-attaches to the running job instead of submitting a second one.
func TestLabProviderRestart(t *testing.T) {
	r := newLabRig(t)
	first, stopFirst := r.startStoppable()
	ctx := context.Background()
	pod := labPod("survivor", sh("main", "echo before; sleep 2; echo after"))
	if err := first.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, pod, "running", phase(corev1.PodRunning))
	st, _ := first.get(pod.Namespace, pod.Name)
	job := st.job

	// The process dies; a new one starts and recovers from Slurm. Only the
	// new one's updates count from here.
	stopFirst()
	r.forget(pod)
	second := r.start()
	if err := second.Recover(ctx, func(uid string) bool { return uid == string(pod.UID) }); err != nil {
		t.Fatal(err)
	}
	if err := second.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	st2, _ := second.get(pod.Namespace, pod.Name)
	if st2.job != job {
		t.Fatalf("after restart the pod has job %d, want the original %d", st2.job, job)
	}
	r.waitFor(t, pod, "succeeded", phase(corev1.PodSucceeded))
	jobs, err := r.slurm.Jobs(ctx, slurmclient.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, j := range jobs {
		if j.Comment == JobComment(r.cfg.NodeName, pod) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d jobs for the pod, want 1", n)
	}
	if got := logsOf(t, second, pod, "main", api.ContainerLogOpts{}); got != "before\nafter\n" {
		t.Errorf("logs after restart: %q", got)
	}

	// A job whose pod is gone is cancelled at recovery.
	orphan := labPod("orphan", sh("main", "sleep 300"))
	if err := second.CreatePod(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, orphan, "running", phase(corev1.PodRunning))
	ost, _ := second.get(orphan.Namespace, orphan.Name)
	third := r.start()
	if err := third.Recover(ctx, func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		j, err := r.slurm.Job(ctx, ost.job)
		switch {
		case errors.Is(err, slurmclient.ErrNotFound):
			t.Fatalf("orphaned job %d: Slurm forgot it before the test saw it end", ost.job)
		case err != nil:
			t.Fatalf("read orphaned job %d: %v", ost.job, err)
		case j.State == slurmclient.StateCancelled:
			return
		case j.State.Terminal():
			t.Fatalf("orphaned job %d ended %s, not cancelled", ost.job, j.State)
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphaned job %d still %s", ost.job, j.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
