package provider

import (
	"context"
	"errors"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Reasons a pod waits before its job is submitted, besides the fetch
// endpoint's (status.go) and CreateContainerConfigError.
const (
	ReasonSlurmUnavailable = "SlurmUnavailable" // slurmrestd did not answer the submit
	ReasonCreateRetrying   = "CreateRetrying"   // anything else transient
)

// maxCreateBackoff bounds the wait between two attempts at a pod's create.
const maxCreateBackoff = time.Minute

// retriesPerCycle bounds the creates one sync cycle tries again.
const retriesPerCycle = 20

// goneFor is how long a deleted pod's UID is remembered: longer than any
// create (or virtual-kubelet's late call) still under way for it.
const goneFor = 10 * time.Minute

// isGone tells whether the pod was deleted. Called with p.mu held.
func (p *Provider) isGone(uid types.UID) bool {
	_, ok := p.gone[uid]
	return ok
}

// createStepTimeout bounds the fetch endpoint's part of one create (the
// directory and every staged file).
const createStepTimeout = 10 * time.Second

// retryLater records that pod could not be created yet: it waits, with
// the reason (the one create gave, else one for err), and the sync loop
// tries again after a back-off that doubles up to maxCreateBackoff.
func (p *Provider) retryLater(ctx context.Context, pod *corev1.Pod, err error) {
	p.mu.Lock()
	st := p.pods[pod.UID]
	if p.isGone(pod.UID) || (st != nil && (st.job != 0 || st.final)) {
		p.mu.Unlock()
		return
	}
	backoff := p.cfg.StatusInterval
	if st != nil && st.backoff > 0 {
		backoff = min(2*st.backoff, maxCreateBackoff)
	}
	hasReason := st != nil && st.pod.Status.Phase == corev1.PodPending && st.pod.Status.Reason != ""
	p.mu.Unlock()
	log.G(ctx).WithError(err).WithField("pod", key(pod.Namespace, pod.Name)).WithField("retry in", backoff).Warn("the pod cannot be created yet")
	if !hasReason {
		reason := ReasonCreateRetrying
		if errors.Is(err, slurmclient.ErrUnavailable) {
			reason = ReasonSlurmUnavailable
		}
		p.waiting(pod, reason, err.Error())
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if st := p.pods[pod.UID]; st != nil && st.job == 0 && !st.final {
		st.orig, st.backoff, st.retryAt = pod, backoff, p.cfg.Now().Add(backoff)
	}
}

// retryDue starts again the creates whose back-off is over, a few at a
// time and in the background: a create waits on the fetch endpoint and
// slurmrestd, the status cycle must not. Run waits for them on its way out.
func (p *Provider) retryDue(ctx context.Context) {
	now := p.cfg.Now()
	var due []*corev1.Pod
	p.mu.Lock()
	for uid, at := range p.gone {
		if now.Sub(at) > goneFor {
			delete(p.gone, uid)
		}
	}
	for uid, st := range p.pods {
		if st.orig != nil && st.job == 0 && !st.final && !st.ran && !p.isGone(uid) && !st.retryAt.After(now) && len(due) < retriesPerCycle {
			due = append(due, st.orig)
			st.retryAt = now.Add(maxCreateBackoff) // until this attempt says otherwise
		}
	}
	p.mu.Unlock()
	for _, pod := range due {
		select {
		case p.retrySlots <- struct{}{}:
		default:
			p.mu.Lock()
			if st := p.pods[pod.UID]; st != nil && st.job == 0 {
				st.retryAt = now // no slot now: next cycle
			}
			p.mu.Unlock()
			continue
		}
		p.retrying.Add(1)
		go func() {
			defer func() { <-p.retrySlots; p.retrying.Done() }()
			if err := p.create(ctx, pod); err != nil && ctx.Err() == nil {
				p.retryLater(ctx, pod, err)
			}
		}()
	}
}
