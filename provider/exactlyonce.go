package provider

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
)

// ranBefore keeps a pod from running twice. Slurm forgets a finished job
// (MinJobAge, 300 s by default), so a pod whose job ended while the
// provider was away finds no job to re-attach to; its directory still
// says it ran: a container's log (created when the container starts) or
// exit marker. Then nothing is submitted: the pod gets its final status
// from the markers, and done is true.
func (p *Provider) ranBefore(ctx context.Context, pod *corev1.Pod) (done bool, err error) {
	infos := map[string]fetchclient.Info{}
	ran := false
	containers, err := p.files.Containers(ctx, PodRef(pod), containerNames(pod))
	switch {
	case err == nil:
	case errors.Is(err, fetchclient.ErrNotFound):
		return false, nil // no pod directory: it never ran
	default:
		// Not knowing is not "it did not run": wait and retry.
		return false, fmt.Errorf("look for an earlier run of the pod: %w", err)
	}
	for name, c := range containers {
		infos[name] = c.Current // the latest attempt
		ran = ran || c.Current.Exists || c.Current.Exited || c.Current.Attempt > 0
	}
	if !ran {
		return false, nil
	}
	status := lostStatus(pod, infos, p.cfg.Now())
	log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("phase", status.Phase).
		Warn("the pod's job ran while the provider was away and Slurm no longer knows it: final status from its exit markers, nothing submitted")
	p.event(pod, corev1.EventTypeWarning, ReasonLost, status.Message)
	pod = pod.DeepCopy()
	pod.Status = status
	st := &podState{pod: pod, final: true, ran: true, done: make(chan struct{})}
	close(st.done)
	p.mu.Lock()
	p.pods[pod.UID] = st
	p.byName[key(pod.Namespace, pod.Name)] = pod.UID
	delete(p.uncertain, pod.UID)
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(pod.DeepCopy())
	}
	return true, nil
}

// lostStatus is the final status of a pod whose job Slurm forgot: each
// container as its marker says, or lost without one.
func lostStatus(pod *corev1.Pod, infos map[string]fetchclient.Info, now time.Time) corev1.PodStatus {
	st := corev1.PodStatus{StartTime: pod.Status.StartTime}
	if st.StartTime == nil {
		st.StartTime = ptrTime(metav1.NewTime(now))
	}
	allOK := true
	term := func(c corev1.Container) corev1.ContainerStatus {
		var t *corev1.ContainerStateTerminated
		if info, ok := infos[c.Name]; ok {
			t = markerState(&info)
		}
		switch {
		case t == nil:
			t = &corev1.ContainerStateTerminated{ExitCode: 137, Reason: ReasonLost, FinishedAt: metav1.NewTime(now),
				Message: "no exit code: the job ended while the provider was away, and Slurm no longer knows it"}
		case t.FinishedAt.IsZero():
			t.FinishedAt = metav1.NewTime(now)
		}
		if t.ExitCode != 0 {
			allOK = false
		}
		return corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{Terminated: t}}
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, term(c))
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, term(c))
	}
	st.Phase = corev1.PodSucceeded
	if !allOK {
		st.Phase, st.Reason = corev1.PodFailed, ReasonLost
		st.Message = "the pod's Slurm job ended while the provider was away and Slurm no longer knows it; container states come from their exit markers (not run again)"
	}
	st.Conditions = conditions(st.Phase, false, false, now, st.Reason, st.Message)
	return st
}
