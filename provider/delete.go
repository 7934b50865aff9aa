package provider

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// graceCancel is a deleted pod's job to cancel at a time, and then its
// directory to remove: the job may write its output until then.
type graceCancel struct {
	at        time.Time
	namespace string // whose tenant cancels it
	dir       layout.Pod
	cancelled bool // cancelled; the directory is still to go
}

// terminate ends a deleted pod's job: a job that may run gets SIGTERM and
// a cancel at the end of the grace period (the pod's deletion time, where
// the API server set it), which the sync loop carries out; a pending job,
// or one whose grace period is over, is cancelled now.
func (p *Provider) terminate(ctx context.Context, pod *corev1.Pod, id slurmclient.JobID, state slurmclient.JobState) (graced bool, err error) {
	now := p.cfg.Now()
	grace := int64(30)
	if pod.DeletionGracePeriodSeconds != nil {
		grace = *pod.DeletionGracePeriodSeconds
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	deadline := now.Add(time.Duration(grace) * time.Second)
	if pod.DeletionTimestamp != nil && pod.DeletionTimestamp.Time.Before(deadline) {
		deadline = pod.DeletionTimestamp.Time
	}
	if state == "" { // not seen yet, or re-found after a restart
		slurm, err := p.slurmAs(pod.Namespace)
		if err != nil {
			return false, err
		}
		j, err := slurm.Job(ctx, id)
		switch {
		case errors.Is(err, slurmclient.ErrNotFound):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("look up job %d: %w", id, err)
		case j.State.Terminal():
			return false, nil
		}
		state = j.State
	}
	if state == slurmclient.StatePending || !deadline.After(now) {
		if err := p.cancelAs(ctx, pod.Namespace, id); err != nil {
			return false, fmt.Errorf("cancel job %d: %w", id, err)
		}
		return false, nil
	}
	if !p.stopAfterPreStop(pod, id, deadline.Sub(now)) {
		slurm, err := p.slurmAs(pod.Namespace)
		if err != nil {
			return false, err
		}
		if err := slurm.Signal(ctx, id, syscall.SIGTERM); err != nil && !errors.Is(err, slurmclient.ErrNotFound) && !errors.Is(err, slurmclient.ErrRejected) {
			return false, fmt.Errorf("signal job %d: %w", id, err)
		}
	}
	p.mu.Lock()
	p.cancels[id] = graceCancel{at: deadline, namespace: pod.Namespace, dir: PodRef(pod)}
	p.mu.Unlock()
	return true, nil
}

// cancelDue cancels the jobs whose grace period is over; a cancel that
// fails is tried again next cycle.
func (p *Provider) cancelDue(ctx context.Context) {
	now := p.cfg.Now()
	p.mu.Lock()
	due := map[slurmclient.JobID]graceCancel{}
	for id, c := range p.cancels {
		if !c.at.After(now) {
			due[id] = c
		}
	}
	p.mu.Unlock()
	for id, c := range due {
		logger := log.G(ctx).WithField("job", id)
		if !c.cancelled {
			if err := p.cancelAs(ctx, c.namespace, id); err != nil {
				logger.WithError(err).Warn("cancel after the grace period; trying again next cycle")
				continue
			}
			logger.Info("job cancelled: the deleted pod's grace period is over")
			c.cancelled = true
			p.mu.Lock()
			p.cancels[id] = c
			p.mu.Unlock()
		}
		if c.dir.UID != "" {
			if err := p.files.DeletePod(ctx, c.dir); err != nil {
				logger.WithError(err).Warn("remove the deleted pod's directory; trying again next cycle")
				continue
			}
		}
		p.mu.Lock()
		delete(p.cancels, id)
		p.mu.Unlock()
	}
}

// DeletePod implements node.PodLifecycleHandler: the job gets SIGTERM, and
// is cancelled (SIGKILL after Slurm's KillWait) once the pod's grace period
// has passed, by the sync loop; a pending job is cancelled at once.
// Idempotent. After a restart, a pod deleted during its grace period is
// not tracked, but its job was found by Recover: the cancel is derived
// again from the pod's deletion time.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	p.gone[pod.UID] = p.cfg.Now()
	st, ok := p.pods[pod.UID]
	adopted, isAdopted := p.adopt[JobComment(p.cfg.NodeName, pod)]
	// As in create: a lost submit answer, or a pod seen before a restart
	// whose recovery failed, may have a job nobody tracks.
	uncertain := p.uncertain[pod.UID] || (pod.Status.StartTime != nil && !p.recovered)
	p.mu.Unlock()
	if !ok && isAdopted {
		return p.deleteAdopted(ctx, pod, adopted)
	}
	if !ok {
		return errdefs.NotFoundf("pod %s is not known to the Slurm provider", key(pod.Namespace, pod.Name))
	}
	job := st.job
	if job == 0 && !st.final && uncertain {
		// A submit whose answer was lost may have made a job after all.
		id, found, err := p.findJob(ctx, JobComment(p.cfg.NodeName, pod))
		if err != nil {
			return err
		}
		if found {
			job = id
		}
	}
	graced := false
	if job != 0 && !st.final {
		var err error
		if graced, err = p.terminate(ctx, pod, job, st.state); err != nil {
			return err
		}
		log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("job", job).Info("job cancelled for the deleted pod")
	}
	// A job still in its grace period keeps its directory until it is
	// cancelled (cancelDue); otherwise the directory goes now, or the
	// delete fails and is retried: staged Secrets must not stay behind.
	if !graced {
		if err := p.files.DeletePod(ctx, PodRef(pod)); err != nil {
			return fmt.Errorf("remove the pod directory: %w", err)
		}
	}
	p.forget(pod, st, job)
	return nil
}

// deleteAdopted ends the job of a pod deleted before this process tracked
// it (Recover found its job): as DeletePod, with nothing to forget.
func (p *Provider) deleteAdopted(ctx context.Context, pod *corev1.Pod, job slurmclient.JobID) error {
	graced, err := p.terminate(ctx, pod, job, "")
	if err != nil {
		return err
	}
	if !graced {
		if err := p.files.DeletePod(ctx, PodRef(pod)); err != nil {
			return fmt.Errorf("remove the pod directory: %w", err)
		}
	}
	p.mu.Lock()
	delete(p.adopt, JobComment(p.cfg.NodeName, pod))
	p.mu.Unlock()
	return nil
}

// forget drops a deleted pod, after a last status that says how it ended.
func (p *Provider) forget(pod *corev1.Pod, st *podState, job slurmclient.JobID) {
	p.mu.Lock()
	final := st.pod.DeepCopy()
	if !st.final {
		msg := fmt.Sprintf("the pod was deleted; Slurm job %d cancelled", job)
		if job == 0 {
			msg = "the pod was deleted before a Slurm job was submitted for it"
		}
		final.Status = failedStatus(final, ReasonDeleted, msg, p.cfg.Now())
		final.Status.Phase = corev1.PodFailed
	}
	delete(p.uncertain, pod.UID)
	delete(p.pods, pod.UID)
	if p.byName[key(pod.Namespace, pod.Name)] == pod.UID {
		delete(p.byName, key(pod.Namespace, pod.Name))
	}
	if !st.final {
		close(st.done)
	}
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(final)
	}
}

// endedBefore is a pod of this node that had ended before this process
// started: virtual-kubelet does not hand such pods to CreatePod, but their
// output is still there, and a kubelet serves it until the pod is deleted.
func (p *Provider) endedBefore(namespace, name string) *podState {
	if p.look.Pod == nil {
		return nil
	}
	pod, err := p.look.Pod(namespace, name)
	if err != nil || pod.Spec.NodeName != p.cfg.NodeName || (pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed) {
		return nil
	}
	done := make(chan struct{})
	close(done)
	return &podState{pod: pod, final: true, ran: true, done: done}
}
