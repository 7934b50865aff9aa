package provider

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// TestLabForgottenJobNotRunTwice: the provider is down while a pod's job
// finishes and slurmctld forgets it (MinJobAge, lowered here for the
// test); the restarted provider submits nothing for the pod, which ends
// as its exit markers say.
func TestLabForgottenJobNotRunTwice(t *testing.T) {
	r := newLabRig(t)
	if r.lab.Rootfs == "" {
		t.Skip("the lab env names no rootfs to reconfigure")
	}
	setMinJobAge(t, r.lab.Rootfs, 2)

	ctx := context.Background()
	first := New(r.cfg, r.slurm, r.files, r.look)
	firstCtx, stopFirst := context.WithCancel(ctx)
	first.NotifyPods(firstCtx, r.record)
	pod := labPod("once", sh("main", "echo ran; sleep 2; exit 4"))
	if err := first.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	running := r.waitFor(t, pod, "running", phase(corev1.PodRunning))
	st, _ := first.get(pod.Namespace, pod.Name)
	job := st.job
	stopFirst() // the provider is gone; its last report says Running

	// Slurm finishes the job and forgets it (purged a while after MinJobAge).
	deadline := time.Now().Add(5 * time.Minute)
	for {
		_, err := r.slurm.Job(ctx, job)
		if errors.Is(err, slurmclient.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("slurmctld still knows job %d after 5 minutes with MinJobAge=2", job)
		}
		time.Sleep(time.Second)
	}

	second := r.start()
	if err := second.Recover(ctx, func(uid string) bool { return uid == string(pod.UID) }); err != nil {
		t.Fatal(err)
	}
	if err := second.CreatePod(ctx, running); err != nil {
		t.Fatal(err)
	}
	done := r.waitFor(t, pod, "failed with its own exit code", phase(corev1.PodFailed))
	if ts := done.Status.ContainerStatuses[0].State.Terminated; ts == nil || ts.ExitCode != 4 {
		t.Errorf("container %+v, want terminated with 4 (from its marker)", done.Status.ContainerStatuses[0].State)
	}
	jobs, err := r.slurm.Jobs(ctx, slurmclient.JobFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if j.Comment == JobComment(r.cfg.NodeName, pod) {
			t.Errorf("job %d (%s) submitted again for the pod", j.ID, j.State)
		}
	}
	if got := logsOf(t, second, pod, "main", api.ContainerLogOpts{}); got != "ran\n" {
		t.Errorf("logs %q: the pod ran again or lost its output", got)
	}
}

// setMinJobAge lowers slurmctld's MinJobAge for one test, and puts it back.
func setMinJobAge(t *testing.T, rootfs string, seconds int) {
	conf := rootfs + "/etc/slurm/slurm.conf"
	orig, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^MinJobAge=.*\n`)
	changed := append(re.ReplaceAll(orig, nil), []byte("MinJobAge="+strconv.Itoa(seconds)+"\n")...)
	reconfigure := func(b []byte) {
		if err := os.WriteFile(conf, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("chroot", rootfs, "scontrol", "reconfigure").CombinedOutput(); err != nil {
			t.Fatalf("scontrol reconfigure: %v: %s", err, out)
		}
	}
	reconfigure(changed)
	t.Cleanup(func() { reconfigure(orig) })
}

// TestLabDeleteCancelsAfterGraceAcrossRestart: a job that ignores SIGTERM
// is cancelled when its pod's grace period is over, although the provider
// that sent the TERM died right after and a new one took over.
func TestLabDeleteCancelsAfterGraceAcrossRestart(t *testing.T) {
	r := newLabRig(t)
	ctx := context.Background()
	first := New(r.cfg, r.slurm, r.files, r.look)
	firstCtx, stopFirst := context.WithCancel(ctx)
	first.NotifyPods(firstCtx, r.record)
	// The job notes the TERM outside its pod directory: DeletePod removes
	// that at once here (the fetch endpoint keeps no deleted pods).
	termNote := r.cfg.SharedRoot + "/stubborn-term"
	pod := labPod("stubborn", sh("main", `trap 'echo term-ignored >>`+termNote+`' TERM; echo ready; while :; do sleep 0.2; done`))
	grace := int64(10)
	pod.Spec.TerminationGracePeriodSeconds = &grace
	if err := first.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, pod, "running", phase(corev1.PodRunning))
	waitLog(t, first, pod, "main", "ready\n")
	st, _ := first.get(pod.Namespace, pod.Name)
	deletion := metav1.NewTime(time.Now().Add(time.Duration(grace) * time.Second))
	pod.DeletionTimestamp = &deletion
	if err := first.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	stopFirst()

	second := r.start()
	if err := second.Recover(ctx, func(uid string) bool { return uid == string(pod.UID) }); err != nil {
		t.Fatal(err)
	}
	if err := second.DeletePod(ctx, pod); err != nil {
		t.Fatalf("the new provider does not take over the delete: %v", err)
	}
	if j, err := r.slurm.Job(ctx, st.job); err != nil || j.State != slurmclient.StateRunning {
		t.Fatalf("job %d during the grace period: %v %v, want RUNNING (it ignores TERM)", st.job, j, err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		j, err := r.slurm.Job(ctx, st.job)
		if err != nil && !errors.Is(err, slurmclient.ErrNotFound) {
			t.Fatal(err)
		}
		if err != nil || j.State.Terminal() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d still %s long after its pod's grace period", st.job, j.State)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if b, _ := os.ReadFile(termNote); !strings.Contains(string(b), "term-ignored") {
		t.Errorf("%q: the TERM never reached the job", b)
	}
}
