package provider

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Run syncs pod statuses from Slurm every StatusInterval until ctx ends.
func (p *Provider) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.StatusInterval)
	defer t.Stop()
	defer p.retrying.Wait()
	for {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			log.G(ctx).WithError(err).Warn("status sync: keeping the last known pod statuses")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync is one status cycle: one JobStates request for every job not yet
// final, then a full Job request for each job whose state changed. If
// slurmrestd cannot answer, nothing changes: no pod is failed for it.
func (p *Provider) Sync(ctx context.Context) error {
	p.cancelDue(ctx)
	p.retryDue(ctx)
	p.mu.Lock()
	var ids []slurmclient.JobID
	tracked := map[slurmclient.JobID]*podState{}
	for _, st := range p.pods {
		if st.job != 0 && !st.final {
			ids = append(ids, st.job)
			tracked[st.job] = st
		}
	}
	p.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	states, err := p.slurm.JobStates(ctx, ids)
	if err != nil {
		return err
	}
	seen := map[slurmclient.JobID]bool{}
	var stale []*podState   // pending, unchanged: candidates for a reason refresh
	var running []*podState // running, unchanged: their containers may have changed
	for _, s := range states {
		seen[s.ID] = true
		st := tracked[s.ID]
		if st == nil {
			continue
		}
		p.mu.Lock()
		changed := s.State != st.state || len(s.StateFlags) != st.flags
		p.mu.Unlock()
		switch {
		case changed:
			if err := p.refresh(ctx, st, len(s.StateFlags)); err != nil {
				return err
			}
		case s.State == slurmclient.StatePending:
			stale = append(stale, st)
		case s.State == slurmclient.StateRunning:
			running = append(running, st)
		}
	}
	for id, st := range tracked {
		if !seen[id] {
			// Not in the answer: slurmctld forgot it. Confirm before
			// declaring it lost.
			if err := p.refresh(ctx, st, 0); err != nil {
				return err
			}
		}
	}
	p.refreshRunning(ctx, running)
	return p.refreshPending(ctx, stale)
}

// refreshPending re-reads a few pending jobs so their pods show why Slurm
// still holds them: first those whose reason is not known yet, then the
// least recently read, each at most every PendingRefresh.
func (p *Provider) refreshPending(ctx context.Context, stale []*podState) error {
	now := p.cfg.Now()
	p.mu.Lock()
	due := stale[:0]
	for _, st := range stale {
		if st.reason == "" || now.Sub(st.checked) >= p.cfg.PendingRefresh {
			due = append(due, st)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		ui, uj := due[i].reason == "", due[j].reason == ""
		if ui != uj {
			return ui
		}
		return due[i].checked.Before(due[j].checked)
	})
	if len(due) > p.cfg.PendingRefreshPerCycle {
		due = due[:p.cfg.PendingRefreshPerCycle]
	}
	flags := make([]int, len(due))
	for i, st := range due {
		flags[i] = st.flags
	}
	p.mu.Unlock()
	for i, st := range due {
		if err := p.refresh(ctx, st, flags[i]); err != nil {
			return err
		}
	}
	return nil
}

// refresh fetches a job's full record (and, once it has ended or runs,
// its containers' exit markers) and publishes the pod's new status.
func (p *Provider) refresh(ctx context.Context, st *podState, flags int) error {
	p.mu.Lock()
	pod := st.pod.DeepCopy()
	p.mu.Unlock()
	now := p.cfg.Now()
	job, err := p.slurm.Job(ctx, st.job)
	var status corev1.PodStatus
	final := false
	seen := ""
	var containers map[string]fetchclient.Container
	switch {
	case errors.Is(err, slurmclient.ErrNotFound):
		status = failedStatus(pod, ReasonLost, fmt.Sprintf("Slurm job %d disappeared before its final state was seen", st.job), now)
		final = true
	case err != nil:
		return err
	default:
		if job.State != slurmclient.StatePending {
			containers, err = p.files.Containers(ctx, PodRef(pod), containerNames(pod))
			if err != nil {
				if job.State.Terminal() {
					log.G(ctx).WithError(err).WithField("pod", key(pod.Namespace, pod.Name)).Warn("read exit markers; using the job's exit code")
				}
				// What was seen last stands (no restartCount back to 0).
				p.mu.Lock()
				containers = st.attempts
				p.mu.Unlock()
			}
		}
		o := observe(job, containers)
		seen = fingerprint(containers)
		status = podStatus(pod, o, now)
		final = job.State.Terminal()
	}
	p.mu.Lock()
	if cur, ok := p.pods[pod.UID]; !ok || cur != st {
		p.mu.Unlock()
		return nil // deleted meanwhile
	}
	if job != nil && job.State == slurmclient.StatePending && job.StateReason != st.reason && job.StateReason != "" {
		defer p.event(pod, corev1.EventTypeNormal, ReasonPending, pendingMessage(job))
	}
	st.pod.Status = status
	if job != nil {
		st.state, st.reason = job.State, job.StateReason
		st.record, st.seen = job, seen
		if containers != nil {
			st.attempts = containers
		}
	}
	st.checked = now
	st.flags = flags
	ended := final && !st.final
	if ended {
		st.final = true
		close(st.done)
	}
	out := st.pod.DeepCopy()
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(out)
	}
	if ended {
		// The job is over: its Secrets need not wait for the pod's delete.
		if err := p.files.Unstage(ctx, PodRef(out)); err != nil {
			log.G(ctx).WithError(err).WithField("pod", key(out.Namespace, out.Name)).Warn("remove the staged files of an ended job; they go when the pod is deleted")
		}
	}
	return nil
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// closed is a channel that is closed.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
