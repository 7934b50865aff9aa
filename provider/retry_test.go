package provider

import (
	"context"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// TestCreateRetriedBySyncLoop: slurmrestd down when a pod is created. The
// pod is not failed (CreatePod returns no error, which virtual-kubelet
// would turn into Failed); it waits with SlurmUnavailable, and the sync
// loop submits it once slurmrestd is back, exactly once even with
// virtual-kubelet calling CreatePod at the same time. A pod deleted while
// it waits is never submitted.
func TestCreateRetriedBySyncLoop(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 4, 0, 0, 0, time.UTC)
	f := newFakeSlurm()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone},
		Now: func() time.Time { return now }}, f, noFiles{}, lookups)
	f.down = true
	pod, deleted := tenantPod("ns", "u-1"), tenantPod("ns", "u-2")
	deleted.Name = "deleted"
	for _, pd := range []*corev1.Pod{pod, deleted} {
		if err := p.CreatePod(ctx, pd); err != nil {
			t.Fatalf("CreatePod returned %v: virtual-kubelet would fail the pod", err)
		}
	}
	got, err := p.GetPod(ctx, "ns", "p")
	if err != nil || got.Status.Phase != corev1.PodPending || got.Status.Reason != ReasonSlurmUnavailable {
		t.Fatalf("while slurmrestd is down: %v %+v, want Pending %s", err, got.Status, ReasonSlurmUnavailable)
	}
	// Deleted while slurmrestd is down: the delete cannot yet look for a
	// job the lost submit may have made, so it fails and is retried.
	if err := p.DeletePod(ctx, deleted); err == nil {
		t.Fatal("a delete that could not look for the pod's job succeeded")
	}
	f.down = false
	if err := p.DeletePod(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	f.reset()
	p.Sync(ctx) // the back-off is not over: no attempt yet
	p.retrying.Wait()
	if n := f.reset()["submit"]; n != 0 {
		t.Fatalf("%d submits before the back-off was over", n)
	}
	now = now.Add(time.Minute)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.Sync(ctx) }()
	go func() { defer wg.Done(); p.CreatePod(ctx, pod) }()
	wg.Wait()
	p.retrying.Wait()
	p.Sync(ctx)
	p.retrying.Wait()
	if n := f.reset()["submit"]; n != 1 {
		t.Fatalf("%d submits once slurmrestd was back, want exactly 1 (and none for the deleted pod)", n)
	}
	if st, _ := p.get("ns", "p"); st == nil || st.job == 0 {
		t.Fatalf("the pod follows %+v after its retry", st)
	}
	if _, err := p.get("ns", "deleted"); err == nil {
		t.Error("the deleted pod came back")
	}
}
