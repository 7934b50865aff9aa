package provider

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Containers that restart (restartPolicy OnFailure, Always) do so inside
// the job: the job script counts attempts in the pod directory, and the
// provider only reads them. A running job's state does not change when
// one of its containers ends or starts again, so the sync loop looks at
// the attempts of running pods whose containers can change on their own:
// more than one container, or restarts.

// watchesContainers says whether a running pod's status can change while
// its job's state does not: its containers can end or start on their own,
// or have not all started yet (attempts as last read).
func watchesContainers(pod *corev1.Pod, attempts map[string]fetchclient.Container) bool {
	if len(pod.Spec.Containers)+len(pod.Spec.InitContainers) > 1 || restartPolicy(pod) != corev1.RestartPolicyNever {
		return true
	}
	for _, c := range pod.Spec.Containers {
		if cur := attempts[c.Name].Current; cur.StartedAt == nil && !cur.Exited {
			return true
		}
	}
	return false
}

// refreshRunning re-reads the containers of running pods that need it (one
// request per pod to the fetch endpoint, none to slurmrestd) and publishes
// a new status where they changed. Failures wait for the next cycle.
//
// It must not hold up the sync loop: each request has containersTimeout
// (no retries past it), the loop stops after one StatusInterval, and the
// pods least recently looked at go first, so every pod has its turn.
func (p *Provider) refreshRunning(ctx context.Context, running []*podState) {
	p.mu.Lock()
	sort.Slice(running, func(i, j int) bool { return running[i].polled.Before(running[j].polled) })
	p.mu.Unlock()
	// The budget and the turn order measure this loop's own work, so they
	// are real time, not Config.Now (the pods' clock, frozen in tests).
	budget := time.Now().Add(p.cfg.StatusInterval)
	for _, st := range running {
		if ctx.Err() != nil || time.Now().After(budget) {
			return
		}
		p.mu.Lock()
		pod, rec, seen, watch := st.pod.DeepCopy(), st.record, st.seen, watchesContainers(st.pod, st.attempts)
		st.polled = time.Now()
		p.mu.Unlock()
		if rec == nil || rec.State != slurmclient.StateRunning || !watch {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, containersTimeout)
		containers, err := p.files.Containers(cctx, PodRef(pod), containerNames(pod))
		cancel()
		if err != nil {
			log.G(ctx).WithError(err).WithField("pod", key(pod.Namespace, pod.Name)).Debug("read the containers' attempts; next cycle")
			continue
		}
		fp := fingerprint(containers)
		if fp == seen {
			continue
		}
		status := podStatus(pod, observe(rec, containers), p.cfg.Now())
		p.mu.Lock()
		if cur, ok := p.pods[pod.UID]; !ok || cur != st || st.final || st.record != rec {
			p.mu.Unlock()
			continue // deleted, ended or refreshed meanwhile
		}
		st.pod.Status = status
		st.seen, st.attempts = fp, containers
		out := st.pod.DeepCopy()
		cb := p.notify
		p.mu.Unlock()
		if cb != nil {
			cb(out)
		}
	}
}

// containersTimeout bounds one look at a running pod's containers.
const containersTimeout = 3 * time.Second

// logAttempt picks the attempt kubectl logs asks for: the latest, or with
// previous the last one that ended: the latest itself while the job waits
// to restart it (the container lastState names), else the one before it,
// which must exist (the kubelet's answer otherwise).
func (p *Provider) logAttempt(ctx context.Context, pod *corev1.Pod, container string, previous, ended bool) (int, error) {
	cs, err := p.files.Containers(ctx, PodRef(pod), []string{container})
	if err != nil {
		return 0, err
	}
	c := cs[container]
	if !previous {
		return c.Current.Attempt, nil
	}
	policy := restartPolicy(pod)
	for _, ic := range pod.Spec.InitContainers {
		if ic.Name == container {
			policy = initPolicy(pod)
		}
	}
	if cur := c.Current; !ended && cur.Exited && cur.ExitCode != nil && restarts(policy, *cur.ExitCode) {
		return cur.Attempt, nil
	}
	if c.Previous == nil || !(c.Previous.Exists || c.Previous.Exited) {
		return 0, errdefs.InvalidInput(fmt.Sprintf("previous terminated container %q in pod %q not found", container, pod.Name))
	}
	return c.Previous.Attempt, nil
}
