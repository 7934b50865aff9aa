package provider

import (
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// recFiles is a fetch endpoint that records what is removed, and can be
// made to fail staging.
type recFiles struct {
	noFiles
	mu        sync.Mutex
	failStage bool
	deleted   []string // pod directories removed
	unstaged  []string // pod directories whose staged files were removed
}

func (r *recFiles) Stage(context.Context, layout.Pod, string, []byte, os.FileMode) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failStage {
		return errors.New("connection reset")
	}
	return nil
}

func (r *recFiles) DeletePod(_ context.Context, p layout.Pod) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deleted = append(r.deleted, p.Dir())
	return nil
}

func (r *recFiles) Unstage(_ context.Context, p layout.Pod) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unstaged = append(r.unstaged, p.Dir())
	return nil
}

func (r *recFiles) has(list *[]string, p *corev1.Pod) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(*list, PodRef(p).Dir())
}

// lostAnswer is fakeSlurm whose submits succeed but whose answers are
// lost, as when slurmrestd's reply never arrives.
type lostAnswer struct{ *fakeSlurm }

func (l lostAnswer) Submit(ctx context.Context, s slurmclient.JobSpec) (slurmclient.JobID, error) {
	l.fakeSlurm.Submit(ctx, s)
	return 0, &slurmclient.Error{Kind: slurmclient.ErrUnavailable, Op: "submit", Err: errors.New("EOF")}
}

func secretPod(name, uid string) *corev1.Pod {
	grace := int64(30)
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, UID: types.UID(uid)},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{Name: "main", Command: []string{"sleep", "1000"},
			Env: []corev1.EnvVar{{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}}}}}}
}

// TestNothingLeaksAfterTransientErrors: a pod whose create failed half
// way is still known to delete, which removes its directory (its staged
// Secret) and cancels a job whose submit answer was lost.
func TestNothingLeaksAfterTransientErrors(t *testing.T) {
	ctx := context.Background()
	cfg := Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}}

	files := &recFiles{failStage: true}
	p := New(cfg, newFakeSlurm(), files, lookups)
	pod := secretPod("staging-fails", "u-1")
	p.CreatePod(ctx, pod)
	if st, _ := p.get("ns", "staging-fails"); st == nil || st.pod.Status.Reason != ReasonStagingFailed {
		t.Fatalf("staging failed; the pod: %+v, want it waiting with %s", st, ReasonStagingFailed)
	}
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatalf("delete after a failed create: %v", err)
	}
	if !files.has(&files.deleted, pod) {
		t.Error("the half-created pod's directory (its staged Secret) was not removed")
	}

	f := newFakeSlurm()
	files = &recFiles{}
	p = New(cfg, lostAnswer{f}, files, lookups)
	pod = secretPod("answer-lost", "u-2")
	p.CreatePod(ctx, pod)
	if st, _ := p.get("ns", "answer-lost"); st == nil || st.job != 0 || st.pod.Status.Reason != ReasonSlurmUnavailable {
		t.Fatalf("the submit's answer was lost; the pod: %+v, want it waiting with %s", st, ReasonSlurmUnavailable)
	}
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatalf("delete after a lost submit answer: %v", err)
	}
	if len(f.cancelled) != 1 {
		t.Errorf("cancelled %v: the job made by the submit whose answer was lost must be cancelled", f.cancelled)
	}
	if !files.has(&files.deleted, pod) {
		t.Error("the pod's directory was not removed")
	}
}

// TestDirectoryOutlivesTheGracePeriod: a deleted pod's running job keeps
// its directory, where it writes its output, until it is cancelled at the
// end of the grace period; a job that ended loses its staged files at
// once, its output stays until the pod is deleted.
func TestDirectoryOutlivesTheGracePeriod(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	f := newFakeSlurm()
	files := &recFiles{}
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Now: func() time.Time { return now }}, f, files, lookups)

	pod := secretPod("graceful", "u-1")
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	st, _ := p.get("ns", "graceful")
	f.set(st.job, slurmclient.StateRunning, "")
	p.Sync(ctx)
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if files.has(&files.deleted, pod) {
		t.Fatal("the directory was removed while the job runs its grace period")
	}
	now = now.Add(29 * time.Second)
	p.Sync(ctx)
	if files.has(&files.deleted, pod) {
		t.Fatal("the directory was removed before the grace period was over")
	}
	now = now.Add(2 * time.Second)
	p.Sync(ctx)
	if !files.has(&files.deleted, pod) {
		t.Fatal("the directory outlived the cancel at the end of the grace period")
	}

	done := secretPod("done", "u-2")
	if err := p.CreatePod(ctx, done); err != nil {
		t.Fatal(err)
	}
	st, _ = p.get("ns", "done")
	f.set(st.job, slurmclient.StateCompleted, "")
	p.Sync(ctx)
	if !files.has(&files.unstaged, done) {
		t.Error("the staged Secret of a job that ended stayed until the pod is deleted")
	}
	if files.has(&files.deleted, done) {
		t.Error("the output of a job that ended went before its pod was deleted")
	}
}

// TestGonePodsLoseTheirDirectories: the directory of a pod that is gone
// goes too, whether its delete happened while the provider was away
// (Recover) or never came (a pod of the same name replaced it).
func TestGonePodsLoseTheirDirectories(t *testing.T) {
	ctx := context.Background()
	cfg := Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}}
	f := newFakeSlurm()
	files := &recFiles{}
	gone := secretPod("gone", "u-gone")
	first := New(cfg, f, files, lookups)
	if err := first.CreatePod(ctx, gone); err != nil {
		t.Fatal(err)
	}
	restarted := New(cfg, f, files, lookups)
	if err := restarted.Recover(ctx, func(string) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if !files.has(&files.deleted, gone) {
		t.Error("Recover cancelled a gone pod's job but left its directory")
	}

	old, renewed := secretPod("same", "u-old"), secretPod("same", "u-new")
	if err := restarted.CreatePod(ctx, old); err != nil {
		t.Fatal(err)
	}
	if err := restarted.CreatePod(ctx, renewed); err != nil {
		t.Fatal(err)
	}
	if !files.has(&files.deleted, old) || files.has(&files.deleted, renewed) {
		t.Errorf("removed %v: want the replaced pod's directory, not its successor's", files.deleted)
	}
}
