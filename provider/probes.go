package provider

import (
	"encoding/json"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/tunnel"
)

// Probes and the postStart hook run in the job, beside the containers, by
// the tunnel agent (tunnel/agent's RunProbes), from the spec the provider
// stages for it; the provider reads back which containers are ready and
// started. Without the agent (exec not enabled on the node, or a pod of
// srun tasks on other nodes) nothing runs them: containers count as ready
// and started once running, as before.

// probeSpec is the pod's probes and postStart hooks for the agent; nil when
// it has none.
func (t *translator) probeSpec() (*tunnel.Probes, error) {
	var out tunnel.Probes
	grace := t.stopGrace() + 1
	var cs []corev1.Container
	for _, c := range t.pod.Spec.InitContainers {
		if sidecar(&c) { // probed as it runs beside the containers
			cs = append(cs, c)
		}
	}
	for _, c := range append(cs, t.pod.Spec.Containers...) {
		cp := tunnel.ContainerProbes{Name: c.Name, Grace: grace}
		var err error
		if cp.Startup, err = probe(&c, c.StartupProbe, "startupProbe"); err != nil {
			return nil, err
		}
		if cp.Liveness, err = probe(&c, c.LivenessProbe, "livenessProbe"); err != nil {
			return nil, err
		}
		if cp.Readiness, err = probe(&c, c.ReadinessProbe, "readinessProbe"); err != nil {
			return nil, err
		}
		if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
			h, err := handler(&c, c.Lifecycle.PostStart.Exec, c.Lifecycle.PostStart.HTTPGet, c.Lifecycle.PostStart.TCPSocket, nil, c.Lifecycle.PostStart.Sleep, "lifecycle.postStart")
			if err != nil {
				return nil, err
			}
			cp.PostStart = h
		}
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil { // sent at the delete (lifecycle.go); checked now
			h := c.Lifecycle.PreStop
			if _, err := handler(&c, h.Exec, h.HTTPGet, h.TCPSocket, nil, h.Sleep, "lifecycle.preStop"); err != nil {
				return nil, err
			}
		}
		if cp.Startup != nil || cp.Liveness != nil || cp.Readiness != nil || cp.PostStart != nil {
			out.Containers = append(out.Containers, cp)
		}
	}
	if len(out.Containers) == 0 {
		return nil, nil
	}
	return &out, nil
}

// stageProbes stages the pod's probes for the agent, which the job starts
// with -probes; it says whether there are any.
func (t *translator) stageProbes() (bool, error) {
	if !t.agent() {
		return false, nil
	}
	spec, err := t.probeSpec()
	if err != nil || spec == nil {
		return false, err
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return false, err
	}
	t.stage(layout.StagedProbes, data, 0o400)
	return true, nil
}

// probe is p for the agent, with the API server's defaults where a pod
// (one not defaulted by an API server) leaves them out.
func probe(c *corev1.Container, p *corev1.Probe, field string) (*tunnel.Probe, error) {
	if p == nil {
		return nil, nil
	}
	h, err := handler(c, p.Exec, p.HTTPGet, p.TCPSocket, p.GRPC, nil, field)
	if err != nil {
		return nil, err
	}
	or := func(v, def int32) int {
		if v <= 0 {
			return int(def)
		}
		return int(v)
	}
	out := &tunnel.Probe{Handler: *h, InitialDelay: int(max(p.InitialDelaySeconds, 0)), Period: or(p.PeriodSeconds, 10),
		Timeout: or(p.TimeoutSeconds, 1), SuccessThreshold: or(p.SuccessThreshold, 1), FailureThreshold: or(p.FailureThreshold, 3)}
	if p.TerminationGracePeriodSeconds != nil {
		g := int(max(*p.TerminationGracePeriodSeconds, 1))
		out.Grace = &g
	}
	return out, nil
}

// handler is one of a probe's or hook's actions for the agent (exactly
// one, as the API server requires); named ports are the container's.
func handler(c *corev1.Container, ex *corev1.ExecAction, hg *corev1.HTTPGetAction, tcp *corev1.TCPSocketAction, grpc *corev1.GRPCAction, sl *corev1.SleepAction, field string) (*tunnel.Handler, error) {
	var h tunnel.Handler
	n := 0
	if ex != nil {
		n++
		if len(ex.Command) == 0 {
			return nil, invalid("InvalidProbe", "container %q: %s.exec has no command", c.Name, field)
		}
		h.Exec = ex.Command
	}
	if hg != nil {
		n++
		port, err := containerPort(c, hg.Port, field+".httpGet")
		if err != nil {
			return nil, err
		}
		g := &tunnel.HTTPGet{Scheme: string(hg.Scheme), Host: hg.Host, Port: port, Path: hg.Path}
		if g.Scheme == "" {
			g.Scheme = string(corev1.URISchemeHTTP)
		}
		if g.Scheme != string(corev1.URISchemeHTTP) && g.Scheme != string(corev1.URISchemeHTTPS) {
			return nil, invalid("InvalidProbe", "container %q: %s.httpGet.scheme %q: want HTTP or HTTPS", c.Name, field, hg.Scheme)
		}
		for _, hd := range hg.HTTPHeaders {
			g.Headers = append(g.Headers, [2]string{hd.Name, hd.Value})
		}
		h.HTTP = g
	}
	if tcp != nil {
		n++
		port, err := containerPort(c, tcp.Port, field+".tcpSocket")
		if err != nil {
			return nil, err
		}
		h.TCP = &tunnel.TCPProbe{Host: tcp.Host, Port: port}
	}
	if grpc != nil {
		n++
		if grpc.Port < 1 || grpc.Port > 65535 {
			return nil, invalid("InvalidProbe", "container %q: %s.grpc.port %d is not a port", c.Name, field, grpc.Port)
		}
		h.GRPC = &tunnel.GRPCGet{Port: int(grpc.Port)}
		if grpc.Service != nil {
			h.GRPC.Service = *grpc.Service
		}
	}
	if sl != nil {
		n++
		h.Sleep = int(max(sl.Seconds, 0))
	}
	if n != 1 {
		return nil, invalid("InvalidProbe", "container %q: %s must have exactly one handler (exec, httpGet, tcpSocket, grpc or sleep), not %d", c.Name, field, n)
	}
	return &h, nil
}

// containerPort is a probe's port: a number, or the name of one of the
// container's ports.
func containerPort(c *corev1.Container, p intstr.IntOrString, field string) (int, error) {
	if p.Type == intstr.String {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort), nil
			}
		}
		return 0, invalid("InvalidProbe", "container %q: %s.port %q is not the name of one of its ports", c.Name, field, p.StrVal)
	}
	if p.IntVal < 1 || p.IntVal > 65535 {
		return 0, invalid("InvalidProbe", "container %q: %s.port %d is not a port", c.Name, field, p.IntVal)
	}
	return int(p.IntVal), nil
}

// probed says whether the pod's probes run (see above): the job starts the
// agent.
func (p *Provider) probed(pod *corev1.Pod) bool {
	if p.cfg.Agent == "" || p.cfg.AgentURL == "" {
		return false
	}
	s, err := parseShape(pod)
	return err == nil && (s == nil || s.launcher != LauncherSrun)
}

// hasPostStart says whether the pod's container (or sidecar) name has a
// postStart hook.
func hasPostStart(pod *corev1.Pod, name string) bool {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == name {
				return c.Lifecycle != nil && c.Lifecycle.PostStart != nil
			}
		}
	}
	return false
}

// hasProbes says whether a container's readiness or start can change
// while it runs.
func hasProbes(c *corev1.Container) bool {
	return c.ReadinessProbe != nil || c.StartupProbe != nil || c.Lifecycle != nil && c.Lifecycle.PostStart != nil
}

// probeState is a running container's started and ready, as a kubelet
// reports them: without the probe (or where probes do not run), true.
func probeState(c *corev1.Container, cur fetchclient.Info, probed bool) (started, ready bool) {
	started = !probed || c.StartupProbe == nil || cur.Started
	ready = started && (!probed || c.ReadinessProbe == nil || cur.Ready)
	return started, ready
}
