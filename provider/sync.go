package provider

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	"golang.org/x/sync/errgroup"
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
	p.enforceDeadlines(ctx)
	p.refreshVolumes(ctx)
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
	var changed []refreshing
	var stale []*podState   // pending, unchanged: candidates for a reason refresh
	var running []*podState // running, unchanged: their containers may have changed
	for _, s := range states {
		seen[s.ID] = true
		st := tracked[s.ID]
		if st == nil {
			continue
		}
		p.mu.Lock()
		moved := s.State != st.state || len(s.StateFlags) != st.flags
		p.mu.Unlock()
		switch {
		case moved:
			changed = append(changed, refreshing{st, len(s.StateFlags)})
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
			changed = append(changed, refreshing{st, 0})
		}
	}
	if err := p.refreshAll(ctx, changed); err != nil {
		return err
	}
	p.refreshRunning(ctx, running)
	return p.refreshPending(ctx, stale)
}

// refreshing is a job to read again, with len(flags) as /jobs/state gave.
type refreshing struct {
	st    *podState
	flags int
}

// refreshWorkers bounds the full reads one cycle makes at once. After a
// restart every job is unknown and read once: 20,000 reads one at a time
// held the first cycle, and every other pod's news, for a minute (the
// note on #18); the slurmclient's own limit (MaxConcurrent) still holds.
var refreshWorkers = 8 // a variable for the benchmark's baseline

// refreshAll refreshes each job, refreshWorkers at a time; the first
// error stops the rest.
func (p *Provider) refreshAll(ctx context.Context, jobs []refreshing) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(refreshWorkers)
	for _, j := range jobs {
		g.Go(func() error { return p.refresh(ctx, j.st, j.flags) })
	}
	return g.Wait()
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
	jobs := make([]refreshing, len(due))
	for i, st := range due {
		jobs[i] = refreshing{st, st.flags}
	}
	p.mu.Unlock()
	return p.refreshAll(ctx, jobs)
}

// refresh fetches a job's full record (and, once it has ended or runs,
// its containers' exit markers) and publishes the pod's new status.
func (p *Provider) refresh(ctx context.Context, st *podState, flags int) error {
	p.mu.Lock()
	pod, deadlined := st.pod.DeepCopy(), st.deadlined
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
		o.hostIP = p.hostIP(job)
		o.probed = p.probed(pod)
		seen = fingerprint(containers)
		status = podStatus(pod, o, now)
		final = job.State.Terminal()
	}
	if deadlined {
		status = deadlineExceeded(status)
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
