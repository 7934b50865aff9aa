package provider

import (
	"context"
	"sync"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/tunnel"
	tunnelclient "github.com/slurmkube/slurm-vk/tunnel/client"
)

// A deleted pod's preStop hooks run before its containers get their TERM,
// within the grace period, as a kubelet runs them: the provider sends each
// hook to the job's agent (a tunnel session of kind hook), waits for all
// of them or the grace period, then signals the job. The cancel at the end
// of the grace period stands whatever the hooks do.

// preStops is the pod's preStop hooks by container, for the agent.
func preStops(pod *corev1.Pod) map[string]*tunnel.Handler {
	out := map[string]*tunnel.Handler{}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
			continue
		}
		h := c.Lifecycle.PreStop
		if hd, err := handler(c, h.Exec, h.HTTPGet, h.TCPSocket, nil, h.Sleep, "lifecycle.preStop"); err == nil {
			out[c.Name] = hd
		}
	}
	return out
}

// stopAfterPreStop runs the pod's preStop hooks, for at most grace, then
// sends the job its TERM. It says whether it took the pod (the hooks run
// in the background: a delete does not hold a pod worker for them).
func (p *Provider) stopAfterPreStop(pod *corev1.Pod, id slurmclient.JobID, grace time.Duration) bool {
	hooks := preStops(pod)
	if len(hooks) == 0 || p.tunnel == nil || !p.probed(pod) {
		return false
	}
	ns, name, uid := pod.Namespace, pod.Name, string(pod.UID)
	go func() {
		logger := log.G(context.Background()).WithField("pod", key(ns, name)).WithField("job", id)
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		var wg sync.WaitGroup
		for container, h := range hooks {
			wg.Go(func() {
				exit, err := p.tunnel.Exec(ctx, ns, name, uid, tunnel.Request{Kind: "hook", Container: container, Hook: h}, tunnelclient.Streams{})
				switch {
				case err != nil:
					logger.WithError(err).WithField("container", container).Warn("preStop hook")
				case exit.Code != 0:
					logger.WithField("container", container).WithField("error", exit.Error).Warn("preStop hook failed")
				}
			})
		}
		wg.Wait()
		cancel()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		slurm, err := p.slurmAs(ns)
		if err == nil {
			err = slurm.Signal(sctx, id, syscall.SIGTERM)
		}
		if err != nil {
			logger.WithError(err).Warn("signal the job after its preStop hooks; it is cancelled at the end of the grace period")
		}
	}()
	return true
}
