package provider

import (
	"context"
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

// markerFiles is a fetch endpoint whose pod directories hold what infos
// says, per container.
type markerFiles struct {
	noFiles
	infos map[string]fetchclient.Info
}

func (m markerFiles) Info(_ context.Context, _ layout.Pod, c string, _ int, _ int64) (fetchclient.Info, error) {
	return m.infos[c], nil
}

func (m markerFiles) Containers(_ context.Context, _ layout.Pod, names []string) (map[string]fetchclient.Container, error) {
	out := map[string]fetchclient.Container{}
	for _, n := range names {
		if info, ok := m.infos[n]; ok {
			out[n] = fetchclient.Container{Current: info}
		}
	}
	return out, nil
}

// TestNeverRunTwice: a pod that ran while the provider was away, whose job
// Slurm has forgotten, is never submitted again; its markers say how it
// ended. A pod not seen before, or whose directory shows no run, is.
func TestNeverRunTwice(t *testing.T) {
	code := func(c int) *int { return &c }
	at := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		seenBefore bool
		recovered  bool
		inSlurm    bool // a job with the pod's comment, pending: no files yet
		infos      map[string]fetchclient.Info
		submits    int
		phase      corev1.PodPhase
		exit       int32
	}{
		{"new pod: submitted", false, true, false, nil, 1, corev1.PodPending, 0},
		{"seen before, nothing in its directory: submitted", true, true, false, map[string]fetchclient.Info{}, 1, corev1.PodPending, 0},
		{"ran and succeeded, forgotten by Slurm", true, true, false,
			map[string]fetchclient.Info{"main": {Exists: true, Exited: true, ExitCode: code(0), ExitedAt: &at}}, 0, corev1.PodSucceeded, 0},
		{"ran and failed, forgotten by Slurm", true, true, false,
			map[string]fetchclient.Info{"main": {Exists: true, Exited: true, ExitCode: code(3)}}, 0, corev1.PodFailed, 3},
		{"ran, killed before its marker", true, true, false,
			map[string]fetchclient.Info{"main": {Exists: true}}, 0, corev1.PodFailed, 137},
		{"recovery failed, job pending in Slurm: re-attached", true, false, true, map[string]fetchclient.Info{}, 0, corev1.PodPending, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeSlurm()
			p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}},
				f, markerFiles{infos: tt.infos}, lookups)
			var last *corev1.Pod
			p.notify = func(pod *corev1.Pod) { last = pod }
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: types.UID("u-1")},
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}}}}
			if tt.seenBefore {
				pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, StartTime: ptrTime(metav1.NewTime(at.Add(-time.Hour)))}
			}
			if tt.inSlurm {
				f.Submit(context.Background(), specFor(pod))
				f.reset()
			}
			if tt.recovered {
				if err := p.Recover(context.Background(), func(string) bool { return true }); err != nil {
					t.Fatal(err)
				}
				f.reset()
				if tt.inSlurm {
					t.Fatal("a job in Slurm with recovery is the adopt path, not this test's")
				}
			}
			if err := p.CreatePod(context.Background(), pod); err != nil {
				t.Fatal(err)
			}
			if n := f.reset()["submit"]; n != tt.submits {
				t.Errorf("%d submits, want %d", n, tt.submits)
			}
			if last == nil || last.Status.Phase != tt.phase {
				t.Fatalf("status %+v, want phase %s", last, tt.phase)
			}
			if tt.phase == corev1.PodFailed || tt.phase == corev1.PodSucceeded {
				ts := last.Status.ContainerStatuses[0].State.Terminated
				if ts == nil || ts.ExitCode != tt.exit {
					t.Errorf("container %+v, want exit code %d", last.Status.ContainerStatuses[0].State, tt.exit)
				}
				if tt.phase == corev1.PodFailed && last.Status.Reason != ReasonLost {
					t.Errorf("reason %q, want %s", last.Status.Reason, ReasonLost)
				}
			}
			if tt.inSlurm {
				if st, _ := p.get(pod.Namespace, pod.Name); st == nil || st.job != 101 {
					t.Errorf("not re-attached to job 101: %+v", st)
				}
			}
		})
	}
}

// TestLostSubmitAnswer: the provider owns submit-once. A submit whose
// answer was lost made a job; the next attempt finds it by its comment
// instead of submitting again, also when the job has started meanwhile
// (its log exists, no exit marker yet: it runs, it did not die), and a
// delete before that cancels it.
func TestLostSubmitAnswer(t *testing.T) {
	for _, deleteFirst := range []bool{false, true} {
		started := markerFiles{infos: map[string]fetchclient.Info{"main": {Exists: true}}}
		p, f, pod := lostSubmitRig(t, started)
		ctx := context.Background()
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		if deleteFirst {
			if err := p.DeletePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			if len(f.cancelled) != 1 || f.cancelled[0] != 101 {
				t.Errorf("delete after a lost submit answer cancelled %v, want job 101", f.cancelled)
			}
			continue
		}
		if err := p.create(ctx, pod); err != nil { // the sync loop's retry
			t.Fatal(err)
		}
		if n := f.reset()["submit"]; n != 1 {
			t.Errorf("%d submits, want 1", n)
		}
		if st, _ := p.get(pod.Namespace, pod.Name); st == nil || st.job != 101 || st.final {
			t.Errorf("not attached to the job the lost answer made: %+v", st)
		}
	}
}

// TestDeletedDuringLostSubmit: a pod deleted while its submit is on its
// way, whose answer is then lost: the job the submit made is found and
// cancelled, though the delete came before anyone knew to look for it.
func TestDeletedDuringLostSubmit(t *testing.T) {
	p, f, pod := lostSubmitRig(t, noFiles{})
	ctx := context.Background()
	f.onLose = func() {
		if err := p.DeletePod(ctx, pod); err != nil {
			t.Errorf("delete: %v", err)
		}
	}
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if len(f.cancelled) != 1 || f.cancelled[0] != 101 {
		t.Errorf("cancelled %v, want job 101, made by the submit whose answer was lost", f.cancelled)
	}
	if n := f.reset()["submit"]; n != 1 {
		t.Errorf("%d submits, want 1", n)
	}
}

// lostSubmitRig is a recovered provider on files whose next submit will
// make its job and lose the answer, and a pod to create.
func lostSubmitRig(t *testing.T, files Files) (*Provider, *fakeSlurm, *corev1.Pod) {
	t.Helper()
	f := newFakeSlurm()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}},
		f, files, lookups)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: types.UID("u-1")},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}}}}
	if err := p.Recover(context.Background(), func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	f.loseNext = true
	return p, f, pod
}

func specFor(pod *corev1.Pod) slurmclient.JobSpec {
	return slurmclient.JobSpec{Comment: JobComment("n", pod)}
}

// TestRecreatedPodCancelsTheEarlierJob: a pod deleted while its job waits
// in Slurm's queue and created again under the same name (virtual-kubelet
// may force-delete it without DeletePod) leaves no job behind.
func TestRecreatedPodCancelsTheEarlierJob(t *testing.T) {
	f := newFakeSlurm()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}},
		f, noFiles{}, lookups)
	mk := func(uid string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "same", UID: types.UID(uid)},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}}}}
	}
	if err := p.CreatePod(context.Background(), mk("u-1")); err != nil {
		t.Fatal(err)
	}
	first, _ := p.get("ns", "same")
	if err := p.CreatePod(context.Background(), mk("u-2")); err != nil {
		t.Fatal(err)
	}
	if len(f.cancelled) != 1 || f.cancelled[0] != first.job {
		t.Errorf("cancelled %v, want the earlier pod's job %d", f.cancelled, first.job)
	}
	second, _ := p.get("ns", "same")
	if second == nil || second.job == first.job || second.pod.UID != "u-2" {
		t.Errorf("the name's pod is %+v", second)
	}
	p.mu.Lock()
	_, kept := p.pods["u-1"]
	p.mu.Unlock()
	if kept {
		t.Error("the earlier pod is still tracked (and synced) after its name was taken")
	}
}

// TestGraceCancelSurvivesRestart: a deleted pod's running job gets SIGTERM
// and is cancelled when its grace period is over, by the sync loop on the
// configured clock; a provider restarted within the grace period derives
// the cancel again from the pod's deletion time.
func TestGraceCancelSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	f := newFakeSlurm()
	cfg := Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}, Now: clock}
	mk := func(name, uid string) *corev1.Pod {
		grace := int64(30)
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{Name: "main", Command: []string{"sleep", "1000"}}}}}
	}
	cancelled := func(id slurmclient.JobID) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.jobs[id].State == slurmclient.StateCancelled
	}
	// running creates a pod on p whose job Slurm then runs.
	running := func(p *Provider, pod *corev1.Pod) slurmclient.JobID {
		t.Helper()
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		st, _ := p.get(pod.Namespace, pod.Name)
		f.set(st.job, slurmclient.StateRunning, "")
		p.Sync(ctx)
		return st.job
	}
	// syncAfter moves the clock on by d, runs p's sync, and says whether
	// the job is cancelled then.
	syncAfter := func(p *Provider, d time.Duration, job slurmclient.JobID) bool {
		now = now.Add(d)
		p.Sync(ctx)
		return cancelled(job)
	}

	p := New(cfg, f, noFiles{}, lookups)
	pod := mk("a", "u-a")
	job := running(p, pod)
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if f.reset()["signal"] != 1 || cancelled(job) || len(f.signals) != 1 || f.signals[0] != syscall.SIGTERM {
		t.Fatalf("a running job must get SIGTERM (got %v) and keep running through its grace period", f.signals)
	}
	if syncAfter(p, 29*time.Second, job) {
		t.Fatal("cancelled before the grace period was over")
	}
	if !syncAfter(p, 2*time.Second, job) {
		t.Fatal("not cancelled once the grace period was over")
	}

	// A second pod is being deleted when the provider dies; a new one
	// recovers its job and sees the delete again.
	pod = mk("b", "u-b")
	job = running(p, pod)
	deletedAt := metav1.NewTime(now.Add(30 * time.Second)) // what the API server sets: now + grace
	pod.DeletionTimestamp = &deletedAt
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	now = now.Add(10 * time.Second)
	restarted := New(cfg, f, noFiles{}, lookups)
	if err := restarted.Recover(ctx, func(uid string) bool { return uid == "u-b" }); err != nil {
		t.Fatal(err)
	}
	if err := restarted.DeletePod(ctx, pod); err != nil {
		t.Fatalf("the restarted provider does not know the deleted pod's job: %v", err)
	}
	if syncAfter(restarted, 15*time.Second, job) {
		t.Fatal("cancelled before the deletion time")
	}
	if !syncAfter(restarted, 6*time.Second, job) {
		t.Fatal("the job of a pod deleted before the restart outlived its grace period")
	}

	// A pending job is cancelled at once.
	pod = mk("c", "u-c")
	if err := restarted.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	st, _ := restarted.get("ns", "c")
	if err := restarted.DeletePod(ctx, pod); err != nil || !cancelled(st.job) {
		t.Fatalf("a pending job's pod deleted: %v, cancelled %v", err, cancelled(st.job))
	}
}

// TestRestartKeepsStatus: a running pod re-attached to its job after a
// restart keeps the status it had, Running, until the sync loop reads the
// job; it is never shown Pending in between.
func TestRestartKeepsStatus(t *testing.T) {
	ctx := context.Background()
	f := newFakeSlurm()
	cfg := Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "a", UID: "u-a"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"sleep", "1000"}}}}}
	p := New(cfg, f, startedFiles{}, lookups)
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	st, _ := p.get(pod.Namespace, pod.Name)
	f.set(st.job, slurmclient.StateRunning, "")
	p.Sync(ctx)
	reported, err := p.GetPod(ctx, pod.Namespace, pod.Name)
	if err != nil || reported.Status.Phase != corev1.PodRunning {
		t.Fatalf("before the restart: %v, %v", reported.Status.Phase, err)
	}

	// The API server's pod carries what the first provider reported.
	restarted := New(cfg, f, startedFiles{}, lookups)
	var notified []corev1.PodPhase
	restarted.notify = func(p *corev1.Pod) { notified = append(notified, p.Status.Phase) }
	if err := restarted.Recover(ctx, func(uid string) bool { return uid == "u-a" }); err != nil {
		t.Fatal(err)
	}
	if err := restarted.CreatePod(ctx, reported); err != nil {
		t.Fatal(err)
	}
	got, err := restarted.GetPod(ctx, pod.Namespace, pod.Name)
	if err != nil || got.Status.Phase != corev1.PodRunning {
		t.Errorf("re-attached: phase %v, %v; want Running until the sync reads the job", got.Status.Phase, err)
	}
	for _, ph := range notified {
		if ph != corev1.PodRunning {
			t.Errorf("notified %v after the restart, want nothing but Running", notified)
		}
	}
	if n := f.reset()["submit"]; n != 1 {
		t.Errorf("%d submits, want the first only", n)
	}
}

// stagingHook is noFiles whose CreatePod (the pod directory, staging's
// first step) runs hook first: what happens while a create stages.
type stagingHook struct {
	noFiles
	hook func()
}

func (s stagingHook) CreatePod(context.Context, layout.Pod, string) error {
	s.hook()
	return nil
}

// TestLostRequestLandsWhileStaging: a submit failed without an answer (the
// request may still be on its way), so the retry looks for the pod's job
// first, finds none, and stages its files; meanwhile the lost request
// lands and makes its job. The retry looks once more right before it
// submits, finds that job and follows it: one job, not two.
func TestLostRequestLandsWhileStaging(t *testing.T) {
	ctx := context.Background()
	f := newFakeSlurm()
	var pod *corev1.Pod
	landed := false
	files := stagingHook{hook: func() {
		if landed || pod == nil {
			return
		}
		landed = true
		f.mu.Lock()
		f.next++
		f.jobs[f.next] = &slurmclient.Job{ID: f.next, Comment: JobComment("n", pod), State: slurmclient.StatePending, SubmitTime: time.Now()}
		f.mu.Unlock()
	}}
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}}, f, files, lookups)
	if err := p.Recover(ctx, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	pod = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: types.UID("u-1")},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}}}}
	p.mu.Lock()
	p.uncertain[pod.UID] = true // an earlier submit got no answer
	p.mu.Unlock()
	if err := p.create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if !landed {
		t.Fatal("the pod staged nothing: the test's hook never ran")
	}
	if n := f.reset()["submit"]; n != 0 {
		t.Errorf("%d submits, want none: the job the lost request made runs the pod", n)
	}
	if st, _ := p.get(pod.Namespace, pod.Name); st == nil || st.job != 101 {
		t.Errorf("the pod follows %+v, want job 101", st)
	}
}
