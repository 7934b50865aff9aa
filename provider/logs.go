package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
)

// GetContainerLogs implements nodeutil.Provider through the fetch
// endpoint. A follow stream ends when the container's exit marker says so,
// or when the job is known to have ended.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	st, err := p.get(namespace, podName)
	if err != nil {
		if st = p.endedBefore(namespace, podName); st == nil {
			return nil, err
		}
	}
	p.mu.Lock()
	pod := st.pod.DeepCopy()
	p.mu.Unlock()
	found := false
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		found = found || c.Name == containerName
	}
	if !found {
		return nil, errdefs.NotFoundf("container %q is not in pod %s", containerName, key(namespace, podName))
	}
	if st.job == 0 && !st.ran {
		return nil, errdefs.InvalidInput(fmt.Sprintf("pod %s never ran: %s", key(namespace, podName), pod.Status.Message))
	}
	attempt, err := p.logAttempt(ctx, pod, containerName, opts.Previous, isDone(st.done))
	if err != nil {
		return nil, logsError(err, containerName, key(namespace, podName))
	}
	tail := int64(-1)
	if opts.Tail > 0 || TailZero(ctx) { // virtual-kubelet's Tail cannot tell 0 from unset
		tail = int64(opts.Tail)
	}
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = p.cfg.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	// A previous attempt is over: following it ends at its end.
	terminated := st.done
	if opts.Previous {
		terminated = closed
	}
	rc, err := p.files.Logs(ctx, PodRef(pod), containerName, fetchclient.LogOptions{
		Attempt: attempt, TailLines: tail, LimitBytes: int64(opts.LimitBytes), Follow: opts.Follow,
		Timestamps: opts.Timestamps, Since: since, Terminated: terminated,
	})
	if err != nil {
		return nil, logsError(err, containerName, key(namespace, podName))
	}
	if m := p.cfg.Metrics; m != nil {
		m.logStreams.Inc()
		rc = &countedStream{ReadCloser: rc, g: m.logStreams}
	}
	return rc, nil
}

// logsError classifies a failed logs request for virtual-kubelet's HTTP
// answer: what the fetch endpoint says does not exist is 404, what it
// refuses (a job that put something other than its output in its place,
// a node token that may not reach the pod) 400 with its reason; only
// server and transport faults stay 500s.
func logsError(err error, container, pod string) error {
	switch {
	case errdefs.IsInvalidInput(err) || errdefs.IsNotFound(err):
		return err
	case errors.Is(err, fetchclient.ErrNotFound):
		return errdefs.NotFoundf("no output for container %q of pod %s yet", container, pod)
	case errors.Is(err, fetchclient.ErrForbidden), errors.Is(err, fetchclient.ErrRejected):
		return errdefs.AsInvalidInput(fmt.Errorf("logs of container %q of pod %s: %w", container, pod, err))
	}
	return err
}

type tailZeroKey struct{}

// WithTailZero marks a logs request that asked for tailLines=0, which
// virtual-kubelet's options cannot tell from no tail at all: the kubelet
// answers it with nothing, and so does GetContainerLogs.
func WithTailZero(ctx context.Context) context.Context {
	return context.WithValue(ctx, tailZeroKey{}, true)
}

// TailZero reports WithTailZero.
func TailZero(ctx context.Context) bool { v, _ := ctx.Value(tailZeroKey{}).(bool); return v }
