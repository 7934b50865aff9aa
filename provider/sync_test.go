package provider

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// fakeSlurm is an in-memory slurmctld for unit tests.
type fakeSlurm struct {
	mu        sync.Mutex
	jobs      map[slurmclient.JobID]*slurmclient.Job
	next      slurmclient.JobID
	down      bool
	calls     map[string]int
	cancelled []slurmclient.JobID
	signals   []syscall.Signal
	nodes     []slurmclient.Node
	// loseNext makes the next submit create its job but lose the answer;
	// onLose, if set, runs then, as if while the answer was on its way.
	loseNext bool
	onLose   func()
}

func newFakeSlurm() *fakeSlurm {
	return &fakeSlurm{jobs: map[slurmclient.JobID]*slurmclient.Job{}, next: 100, calls: map[string]int{}}
}

// count is how many times op was called.
func (f *fakeSlurm) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

func (f *fakeSlurm) call(op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[op]++
	if f.down {
		return &slurmclient.Error{Kind: slurmclient.ErrUnavailable, Op: op, Err: fmt.Errorf("connection refused")}
	}
	return nil
}

func (f *fakeSlurm) Ping(context.Context) (slurmclient.ServerInfo, error) {
	return slurmclient.ServerInfo{SlurmVersion: "24.11.5"}, f.call("ping")
}

func (f *fakeSlurm) Submit(_ context.Context, s slurmclient.JobSpec) (slurmclient.JobID, error) {
	if err := f.call("submit"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.jobs[f.next] = &slurmclient.Job{ID: f.next, Comment: s.Comment, State: slurmclient.StatePending, StateReason: "Priority", SubmitTime: time.Now()}
	if f.loseNext {
		f.loseNext = false
		if f.onLose != nil {
			f.mu.Unlock()
			f.onLose()
			f.mu.Lock()
		}
		return 0, fmt.Errorf("%w: %w", slurmclient.ErrOutcomeUnknown, &slurmclient.Error{Kind: slurmclient.ErrUnavailable, Op: "submit", Err: fmt.Errorf("EOF")})
	}
	return f.next, nil
}

func (f *fakeSlurm) Job(_ context.Context, id slurmclient.JobID) (*slurmclient.Job, error) {
	if err := f.call("job"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	j, ok := f.jobs[id]
	if !ok {
		return nil, &slurmclient.Error{Kind: slurmclient.ErrNotFound, Op: "get job"}
	}
	c := *j
	return &c, nil
}

func (f *fakeSlurm) JobStates(_ context.Context, ids []slurmclient.JobID) ([]slurmclient.JobStatus, error) {
	if err := f.call("states"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []slurmclient.JobStatus
	for _, id := range ids {
		if j, ok := f.jobs[id]; ok {
			out = append(out, slurmclient.JobStatus{ID: id, State: j.State})
		}
	}
	return out, nil
}

func (f *fakeSlurm) Jobs(context.Context, slurmclient.JobFilter) ([]slurmclient.Job, error) {
	if err := f.call("jobs"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []slurmclient.Job
	for _, j := range f.jobs {
		out = append(out, *j)
	}
	return out, nil
}

func (f *fakeSlurm) Cancel(_ context.Context, id slurmclient.JobID) error {
	if err := f.call("cancel"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = append(f.cancelled, id)
	if j, ok := f.jobs[id]; ok {
		j.State = slurmclient.StateCancelled
	}
	return nil
}

func (f *fakeSlurm) Signal(_ context.Context, _ slurmclient.JobID, sig syscall.Signal) error {
	if err := f.call("signal"); err != nil {
		return err
	}
	f.mu.Lock()
	f.signals = append(f.signals, sig)
	f.mu.Unlock()
	return nil
}
func (f *fakeSlurm) Nodes(context.Context) ([]slurmclient.Node, error) {
	return f.nodes, f.call("nodes")
}

func (f *fakeSlurm) set(id slurmclient.JobID, state slurmclient.JobState, reason string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	j := f.jobs[id]
	j.State, j.StateReason = state, reason
	if state != slurmclient.StatePending && j.StartTime.IsZero() {
		j.StartTime = time.Now()
	}
	if state.Terminal() {
		j.EndTime = time.Now()
	}
}

func (f *fakeSlurm) reset() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = map[string]int{}
	return c
}

// noFiles is a fetch endpoint that accepts everything and knows no markers.
type noFiles struct{}

func (noFiles) CreatePod(context.Context, layout.Pod, string) error   { return nil }
func (noFiles) DeletePod(context.Context, layout.Pod) error           { return nil }
func (noFiles) Unstage(context.Context, layout.Pod) error             { return nil }
func (noFiles) UnstageFile(context.Context, layout.Pod, string) error { return nil }
func (noFiles) Stage(context.Context, layout.Pod, string, []byte, os.FileMode) error {
	return nil
}
func (noFiles) Info(context.Context, layout.Pod, string, int, int64) (fetchclient.Info, error) {
	return fetchclient.Info{}, nil
}
func (noFiles) Containers(_ context.Context, _ layout.Pod, names []string) (map[string]fetchclient.Container, error) {
	return map[string]fetchclient.Container{}, nil
}
func (noFiles) Logs(context.Context, layout.Pod, string, fetchclient.LogOptions) (io.ReadCloser, error) {
	return nil, fmt.Errorf("no logs here")
}

// startedFiles is noFiles where every container's first attempt has
// started (at the epoch: the job's start stands for it) and none ended:
// a running job's pod is Running.
type startedFiles struct{ noFiles }

func (startedFiles) Containers(_ context.Context, _ layout.Pod, names []string) (map[string]fetchclient.Container, error) {
	out := map[string]fetchclient.Container{}
	epoch := time.Unix(0, 0)
	for _, n := range names {
		out[n] = fetchclient.Container{Current: fetchclient.Info{Exists: true, StartedAt: &epoch}}
	}
	return out, nil
}

func TestSyncRequestsAndTruth(t *testing.T) {
	ctx := context.Background()
	f := newFakeSlurm()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		PendingRefreshPerCycle: 1000}, f, startedFiles{}, lookups)
	var mu sync.Mutex
	last := map[types.UID]*corev1.Pod{}
	p.notify = func(pod *corev1.Pod) { mu.Lock(); last[pod.UID] = pod; mu.Unlock() }
	var pods []*corev1.Pod
	for i := 0; i < 50; i++ {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprintf("u-%d", i))},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}}}}
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod)
	}
	if err := p.Sync(ctx); err != nil { // first sight of every job
		t.Fatal(err)
	}
	f.reset()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c := f.reset(); c["states"] != 1 || c["job"] != 0 {
		t.Errorf("a quiet cycle made %v, want one JobStates only", c)
	}
	// Three jobs change: 1 + 3 requests.
	f.set(101, slurmclient.StateRunning, "")
	f.set(102, slurmclient.StateCompleted, "")
	f.set(103, slurmclient.StateFailed, "NonZeroExitCode")
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if c := f.reset(); c["states"] != 1 || c["job"] != 3 {
		t.Errorf("three changes made %v, want 1 + 3", c)
	}
	mu.Lock()
	if ph := last[pods[0].UID].Status.Phase; ph != corev1.PodRunning {
		t.Errorf("p0 %s", ph)
	}
	if ph := last[pods[1].UID].Status.Phase; ph != corev1.PodSucceeded {
		t.Errorf("p1 %s", ph)
	}
	mu.Unlock()

	// slurmrestd goes away: nothing changes, nobody fails.
	f.mu.Lock()
	f.down = true
	f.mu.Unlock()
	if err := p.Sync(ctx); err == nil {
		t.Error("sync without slurmrestd reported no error")
	}
	mu.Lock()
	if ph := last[pods[0].UID].Status.Phase; ph != corev1.PodRunning {
		t.Errorf("during the outage p0 became %s", ph)
	}
	mu.Unlock()
	f.mu.Lock()
	f.down = false
	// p3's job vanishes without us seeing its end (purged after MinJobAge).
	delete(f.jobs, 104)
	f.mu.Unlock()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if st := last[pods[3].UID].Status; st.Phase != corev1.PodFailed || st.Reason != ReasonLost {
		t.Errorf("vanished job: %s %s, want Failed %s", st.Phase, st.Reason, ReasonLost)
	}
	mu.Unlock()

	// A pending reason change is picked up within a cycle.
	f.set(110, slurmclient.StatePending, "Resources")
	p.cfg.PendingRefresh = 0
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if w := last[pods[9].UID].Status.ContainerStatuses[0].State.Waiting; w == nil || w.Reason != "Resources" {
		t.Errorf("pending reason: %+v", w)
	}
	mu.Unlock()

	// Delete of a pending pod cancels its job at once; a second delete says
	// not found; restarting cancels jobs whose pods are gone.
	if err := p.DeletePod(ctx, pods[20]); err != nil {
		t.Fatal(err)
	}
	if len(f.cancelled) != 1 || f.cancelled[0] != 121 {
		t.Errorf("cancelled %v, want [121]", f.cancelled)
	}
	q := New(p.cfg, f, noFiles{}, lookups)
	if err := q.Recover(ctx, func(uid string) bool { return uid != "u-30" }); err != nil {
		t.Fatal(err)
	}
	if len(f.cancelled) != 2 || f.cancelled[1] != 131 {
		t.Errorf("recovery cancelled %v, want the orphan 131 too", f.cancelled)
	}
	before := f.reset()["submit"]
	if err := q.CreatePod(ctx, pods[5]); err != nil {
		t.Fatal(err)
	}
	if st, _ := q.get("ns", "p5"); st.job != 106 || f.reset()["submit"] != before {
		t.Errorf("after a restart p5 has job %d (want 106) and submits happened", st.job)
	}
}

// A pod whose ConfigMap does not exist yet waits, as on a kubelet, and runs
// once it appears.
func TestMissingConfigMapWaits(t *testing.T) {
	ctx := context.Background()
	f := newFakeSlurm()
	present := false
	look := Lookups{
		ConfigMap: func(ns, name string) (*corev1.ConfigMap, error) {
			if present {
				return &corev1.ConfigMap{Data: map[string]string{"k": "v"}}, nil
			}
			return nil, fmt.Errorf("configmap %q not found", name)
		},
		Secret: lookups.Secret,
	}
	now := time.Now()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Now: func() time.Time { return now }}, f, noFiles{}, look)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u-1"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}, Env: []corev1.EnvVar{{Name: "K",
			ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "k"}}}}}}}}
	// No error: virtual-kubelet would fail the pod; the provider retries.
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	got, err := p.GetPod(ctx, "ns", "p")
	if err != nil || got.Status.Phase != corev1.PodPending || got.Status.ContainerStatuses[0].State.Waiting.Reason != "CreateContainerConfigError" {
		t.Fatalf("waiting pod: %v %+v", err, got.Status)
	}
	if f.reset()["submit"] != 0 {
		t.Fatal("submitted without the ConfigMap")
	}
	present = true
	now = now.Add(time.Minute) // past the back-off
	p.Sync(ctx)
	p.retrying.Wait()
	if f.reset()["submit"] != 1 {
		t.Fatal("not submitted once the ConfigMap exists")
	}
	if st, _ := p.get("ns", "p"); st == nil || st.job == 0 {
		t.Fatalf("after the retry the pod follows %+v", st)
	}
}

// TestActiveDeadline: a pod past its activeDeadlineSeconds, counted from
// its start (and lowered while it runs, as an update may), has its job
// cancelled and fails with the kubelet's reason and message; before
// that, nothing is cancelled.
func TestActiveDeadline(t *testing.T) {
	ctx := context.Background()
	f := newFakeSlurm()
	now := time.Now()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Now: func() time.Time { return now }}, f, startedFiles{}, lookups)
	long := int64(3600)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "u-1"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, ActiveDeadlineSeconds: &long,
			Containers: []corev1.Container{{Name: "main", Command: []string{"sleep", "1000"}}}}}
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	st, _ := p.get("ns", "p")
	f.set(st.job, slurmclient.StateRunning, "")
	now = now.Add(10 * time.Second)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := p.GetPod(ctx, "ns", "p"); got.Status.Phase != corev1.PodRunning || len(f.cancelled) != 0 {
		t.Fatalf("within its deadline: %s, cancelled %v", got.Status.Phase, f.cancelled)
	}
	updated, _ := p.GetPod(ctx, "ns", "p")
	short := int64(5)
	updated.Spec.ActiveDeadlineSeconds = &short
	p.UpdatePod(ctx, updated)
	for range 2 { // the cancel, then the job's new state
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.cancelled) != 1 || f.cancelled[0] != st.job {
		t.Errorf("cancelled %v, want job %d", f.cancelled, st.job)
	}
	got, _ := p.GetPod(ctx, "ns", "p")
	if got.Status.Phase != corev1.PodFailed || got.Status.Reason != ReasonDeadlineExceeded || got.Status.Message != messageDeadlineExceeded {
		t.Errorf("status %s %q %q, want Failed, %s, %q", got.Status.Phase, got.Status.Reason, got.Status.Message, ReasonDeadlineExceeded, messageDeadlineExceeded)
	}
}
