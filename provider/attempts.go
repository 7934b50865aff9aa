package provider

import (
	"context"
	"fmt"
	"sort"
	"strings"
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
		if hasProbes(&c) {
			return true // readiness can change while it runs
		}
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
		pod, rec, seen, watch, deadlined := st.pod.DeepCopy(), st.record, st.seen, watchesContainers(st.pod, st.attempts), st.deadlined
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
		o := observe(rec, containers)
		o.hostIP = p.hostIP(rec)
		o.probed = p.probed(pod)
		status := podStatus(pod, o, p.cfg.Now())
		if deadlined {
			status = deadlineExceeded(status)
		}
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

// hostIP is the address of the node that runs the job's batch script (the
// pod's containers, or its first task), "" while unknown.
func (p *Provider) hostIP(job *slurmclient.Job) string {
	if p.cfg.NodeAddress == nil || job == nil {
		return ""
	}
	node := job.BatchHost
	if node == "" {
		node = firstHost(job.Nodes)
	}
	return p.cfg.NodeAddress(node)
}

// firstHost is the first name of a Slurm host list ("c[1-3],d1": c1).
func firstHost(list string) string {
	end := strings.IndexAny(list, ",[")
	switch {
	case end < 0:
		return list
	case list[end] == ',':
		return list[:end]
	}
	rest := list[end+1:] // a range: PREFIX[FIRST-...
	k := strings.IndexAny(rest, ",-]")
	if k < 0 {
		return list
	}
	return list[:end] + rest[:k]
}
