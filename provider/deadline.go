package provider

import (
	"context"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"
)

// A pod's activeDeadlineSeconds is also its job's time limit (rounded up
// to Slurm's minutes, fixed at submit), but the kubelet's rule is the
// seconds since the pod started, and the field may be lowered while the
// pod runs: the sync loop enforces it itself, cancels the job, and the pod
// fails with the kubelet's reason and message.

const (
	ReasonDeadlineExceeded  = "DeadlineExceeded"
	messageDeadlineExceeded = "Pod was active on the node longer than the specified deadline"
)

// enforceDeadlines cancels the jobs of pods past their active deadline;
// a cancel that fails is tried again next cycle.
func (p *Provider) enforceDeadlines(ctx context.Context) {
	now := p.cfg.Now()
	type due struct {
		st        *podState
		namespace string
	}
	var over []due
	p.mu.Lock()
	for _, st := range p.pods {
		if st.job == 0 || st.final || st.deadlined || !pastDeadline(st.pod, now) {
			continue
		}
		over = append(over, due{st, st.pod.Namespace})
	}
	p.mu.Unlock()
	for _, d := range over {
		if err := p.cancelAs(ctx, d.namespace, d.st.job); err != nil {
			log.G(ctx).WithError(err).WithField("job", d.st.job).Warn("cancel a job past its pod's active deadline; trying again next cycle")
			continue
		}
		p.mu.Lock()
		d.st.deadlined = true
		p.mu.Unlock()
		log.G(ctx).WithField("job", d.st.job).Info("job cancelled: its pod's activeDeadlineSeconds has passed")
	}
}

// pastDeadline says whether the pod has been active longer than its
// activeDeadlineSeconds, counted from its start time, as a kubelet counts.
func pastDeadline(pod *corev1.Pod, now time.Time) bool {
	d := pod.Spec.ActiveDeadlineSeconds
	if d == nil || pod.Status.StartTime == nil {
		return false
	}
	return now.Sub(pod.Status.StartTime.Time) >= time.Duration(*d)*time.Second
}

// deadlineExceeded is st, the status of a pod whose deadline passed:
// failed with the kubelet's reason, whatever its job then did, unless it
// had already succeeded.
func deadlineExceeded(st corev1.PodStatus) corev1.PodStatus {
	if st.Phase == corev1.PodSucceeded {
		return st
	}
	st.Phase, st.Reason, st.Message = corev1.PodFailed, ReasonDeadlineExceeded, messageDeadlineExceeded
	for i := range st.Conditions {
		if c := &st.Conditions[i]; c.Type == corev1.PodReady || c.Type == corev1.ContainersReady {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, ReasonDeadlineExceeded, messageDeadlineExceeded
		}
	}
	return st
}
