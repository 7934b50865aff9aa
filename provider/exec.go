package provider

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/tunnel"
	tunnelclient "github.com/slurmkube/slurm-vk/tunnel/client"
)

// kubectl exec reaches a running job through the tunnel (package tunnel):
// the job script starts the agent, which connects out to the fetch
// endpoint with the pod's agent token; the provider's session meets it
// there.

// Tunnel opens exec sessions on a pod's agent; *tunnelclient.Client is one.
type Tunnel interface {
	Exec(ctx context.Context, ns, name, uid string, req tunnel.Request, s tunnelclient.Streams) (tunnel.Exit, error)
	PortForward(ctx context.Context, ns, name, uid string, port int, stream io.ReadWriter) error
}

var _ Tunnel = (*tunnelclient.Client)(nil)

// agent says whether the job starts the tunnel agent: configured, and the
// containers run on the batch step's node (srun's tasks run elsewhere).
func (t *translator) agent() bool {
	return t.cfg.Agent != "" && t.cfg.AgentURL != "" && (t.shape == nil || t.shape.launcher != LauncherSrun)
}

// agentLines start the agent in the background for the job's life. It is
// optional: a node without it runs the pod, and exec says why it cannot.
func (t *translator) agentLines() string {
	if !t.agent() {
		return ""
	}
	// -stdin only where attach has a FIFO to write: an agent older than
	// attach refuses the flag, and so keeps serving exec for other pods.
	stdin := ""
	if t.anyStdin() {
		stdin = ` -stdin "$svk_pod_dir"/` + shq(layout.StdinDir)
	}
	// -probes too only for pods with probes or hooks (an older agent
	// keeps serving exec for the others).
	if t.probes {
		stdin += ` -probes "$svk_pod_dir"/` + shq(layout.Staged(layout.StagedProbes)) + ` -pod-dir "$svk_pod_dir"`
	}
	ca := ""
	if t.cfg.AgentCAFile != "" {
		ca = " -ca-file " + shq(t.cfg.AgentCAFile)
	}
	return fmt.Sprintf(`svk_agent=
mkdir -p "$svk_pod_dir"/%s || :
if command -v %s >/dev/null 2>&1; then
	%s -url %s%s -namespace %s -name %s -uid %s -token-file "$svk_pod_dir"/%s -pids "$svk_pod_dir"/%s%s -runtime %s </dev/null &
	svk_agent=$!
else
	echo "slurm-vk: the exec agent "%s" is not on this node: kubectl exec cannot reach this pod" >&2
fi
`, shq(layout.PIDsDir), shq(t.cfg.Agent), shq(t.cfg.Agent), shq(t.cfg.AgentURL), ca, shq(t.pod.Namespace), shq(t.pod.Name), shq(string(t.pod.UID)),
		shq(layout.Staged(layout.StagedAgentToken)), shq(layout.PIDsDir), stdin, shq(t.runtime), shq(t.cfg.Agent))
}

// agentToken is a new pod's agent token, staged with its files.
func agentToken() StagedFile {
	b := make([]byte, 32)
	rand.Read(b)
	return StagedFile{Path: layout.StagedAgentToken, Data: []byte(hex.EncodeToString(b) + "\n"), Mode: 0o400}
}

// running is the pod, if the tunnel can reach it: exec is enabled and
// its job runs.
func (p *Provider) running(namespace, podName, what string) (*corev1.Pod, error) {
	if p.tunnel == nil || p.cfg.Agent == "" {
		return nil, errdefs.InvalidInput(what + " is not enabled on this node (the provider's -agent)")
	}
	st, err := p.get(namespace, podName)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	pod, state := st.pod.DeepCopy(), st.state
	p.mu.Unlock()
	if state != slurmclient.StateRunning {
		return nil, errdefs.InvalidInput(fmt.Sprintf("pod %s/%s is not running (its Slurm job is %s)", namespace, podName, strings.ToLower(string(orUnknown(state)))))
	}
	return pod, nil
}

// PortForward implements nodeutil.Provider: kubectl port-forward, to a
// port on the job's node (every runtime's containers share its network),
// through the pod's agent.
func (p *Provider) PortForward(ctx context.Context, namespace, podName string, port int32, stream io.ReadWriteCloser) error {
	defer stream.Close() // also ends the copy from it, should the job's side end first
	pod, err := p.running(namespace, podName, "port-forward")
	if err != nil {
		return err
	}
	err = p.tunnel.PortForward(ctx, namespace, podName, string(pod.UID), int(port), stream)
	if errors.Is(err, tunnelclient.ErrNoAgent) {
		return errdefs.InvalidInput(fmt.Sprintf("pod %s/%s: %v", namespace, podName, err))
	}
	return err
}

// RunInContainer implements nodeutil.Provider: kubectl exec, through the
// pod's agent.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	pod, err := p.running(namespace, podName, "exec")
	if err != nil {
		return err
	}
	req := tunnel.Request{Kind: "exec", Container: containerName, Command: cmd, Stdin: attach.Stdin() != nil, TTY: attach.TTY()}
	s := tunnelclient.Streams{Stdin: attach.Stdin()}
	if w := attach.Stdout(); w != nil {
		s.Stdout = w
	}
	if w := attach.Stderr(); w != nil {
		s.Stderr = w
	}
	if attach.TTY() {
		sizes := make(chan tunnel.TermSize)
		go func() {
			defer close(sizes)
			for {
				select {
				case <-ctx.Done():
					return
				case ts, ok := <-attach.Resize():
					if !ok {
						return
					}
					select {
					case sizes <- tunnel.TermSize{Width: ts.Width, Height: ts.Height}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
		s.Resize = sizes
	}
	exit, err := p.tunnel.Exec(ctx, namespace, podName, string(pod.UID), req, s)
	switch {
	case errors.Is(err, tunnelclient.ErrNoAgent):
		return errdefs.InvalidInput(fmt.Sprintf("pod %s/%s: %v", namespace, podName, err))
	case err != nil:
		return err
	case exit.Error != "":
		return errdefs.InvalidInput(exit.Error)
	case exit.Code != 0:
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", exit.Code), Code: exit.Code}
	}
	return nil
}

// AttachToContainer implements nodeutil.Provider: kubectl attach to a
// container started with stdin or tty. Its output is the container's log
// from now on, followed as kubectl logs -f does, until the container ends;
// what is typed goes through the pod's agent to the container's stdin FIFO
// (the job script made it; package tunnel/agent). With podman and tty the
// container has a terminal, fed by that stdin; other runtimes give it none.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach api.AttachIO) error {
	st, err := p.get(namespace, podName)
	if err != nil {
		return err
	}
	p.mu.Lock()
	pod, state := st.pod.DeepCopy(), st.state
	p.mu.Unlock()
	var c *corev1.Container
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	for i := range all {
		if all[i].Name == containerName {
			c = &all[i]
		}
	}
	switch {
	case c == nil:
		return errdefs.NotFoundf("container %q is not in pod %s", containerName, key(namespace, podName))
	case !c.Stdin && !c.TTY:
		return errdefs.InvalidInput(fmt.Sprintf("container %s was not started with stdin or tty: there is nothing to attach to; kubectl logs -f %s -c %s follows its output", containerName, podName, containerName))
	case state != slurmclient.StateRunning:
		return errdefs.InvalidInput(fmt.Sprintf("pod %s/%s is not running (its Slurm job is %s)", namespace, podName, strings.ToLower(string(orUnknown(state)))))
	}
	// Only a terminal in the container makes one at kubectl's end work:
	// kubectl's raw mode sends Enter as \r and ^D as a byte, which only a
	// terminal's line discipline turns into lines and an end of file.
	if rt := p.runtimeOf(pod); attach.TTY() && rt != RuntimePodman {
		return errdefs.InvalidInput(fmt.Sprintf("container %s has tty: true, but runtime %s gives it no terminal (only podman does): attach with kubectl attach -i, without -t", containerName, rt))
	}
	in := attach.Stdin()
	if in != nil && c.Stdin {
		if _, err := p.running(namespace, podName, "attach with stdin"); err != nil {
			return err
		}
	}
	if err := p.waitStarted(ctx, pod, containerName); err != nil {
		return err
	}
	caller := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var out io.Writer = io.Discard // the log holds stdout and stderr as one
	if w := attach.Stdout(); w != nil {
		out = w
	} else if w := attach.Stderr(); w != nil {
		out = w
	}
	logs, err := p.GetContainerLogs(WithTailZero(ctx), namespace, podName, containerName, api.ContainerLogOpts{Follow: true})
	if err != nil {
		return err
	}
	defer logs.Close()
	// Stdin only once the output's start is fixed (Logs has found it), so
	// no answer to what is typed comes before it.
	stdinErr := make(chan error, 1)
	if in != nil && c.Stdin {
		go func() { stdinErr <- p.attachStdin(ctx, pod, containerName, in) }()
	}
	copied := make(chan error, 1)
	go func() { _, err := io.Copy(out, logs); copied <- err }()
	select {
	case serr := <-stdinErr:
		if serr != nil {
			return serr // nothing typed would reach the container: say so
		}
		err = <-copied // stdin ended; the output goes on until the container ends
	case err = <-copied:
	}
	if caller.Err() != nil {
		return nil // the user went away: not an error of the attach
	}
	return err
}

// attachStdin sends what is typed to the container's stdin until the
// user's stdin ends. The agent connects as the job starts: a session asked
// right after the pod turned Running (kubectl run -i does that) waits for
// it a little.
func (p *Provider) attachStdin(ctx context.Context, pod *corev1.Pod, container string, in io.Reader) error {
	req := tunnel.Request{Kind: "attach", Container: container, Stdin: true}
	for wait := time.Now().Add(agentWait); ; {
		exit, err := p.tunnel.Exec(ctx, pod.Namespace, pod.Name, string(pod.UID), req, tunnelclient.Streams{Stdin: in})
		switch {
		case errors.Is(err, tunnelclient.ErrNoAgent) && time.Now().Before(wait):
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(250 * time.Millisecond):
			}
			continue
		case errors.Is(err, tunnelclient.ErrNoAgent):
			return errdefs.InvalidInput(fmt.Sprintf("pod %s/%s: %v", pod.Namespace, pod.Name, err))
		case err != nil:
			// The session broke: the job is ending (its agent goes first),
			// or the endpoint restarted. The output still has its last
			// bytes to show; what is typed from now on goes nowhere.
			log.G(ctx).WithError(err).WithField("pod", key(pod.Namespace, pod.Name)).WithField("container", container).Info("attach: the stdin session ended")
			return nil
		case exit.Error != "":
			return errdefs.InvalidInput(exit.Error)
		}
		return nil
	}
}

// runtimeOf is the pod's container runtime, as Translate chose it.
func (p *Provider) runtimeOf(pod *corev1.Pod) string {
	if r, ok := pod.Annotations[AnnotationRuntime]; ok {
		return r
	}
	return p.cfg.Runtime
}

// agentWait is how long attach waits for a new job's agent to connect.
const agentWait = 15 * time.Second

// startWait bounds how long attach waits for a container to start (its
// attempt's log to exist, which the job script makes after its stdin FIFO):
// the pod turns Running as its job starts, before an image pull or its
// init containers are done.
const startWait = 10 * time.Minute

// waitStarted waits until the container's latest attempt is running:
// started and not yet ended.
func (p *Provider) waitStarted(ctx context.Context, pod *corev1.Pod, container string) error {
	for deadline := time.Now().Add(startWait); ; {
		cs, err := p.files.Containers(ctx, PodRef(pod), []string{container})
		if err != nil {
			return err
		}
		switch cur := cs[container].Current; {
		case cur.Exited:
			return errdefs.InvalidInput(fmt.Sprintf("container %s of pod %s has ended: there is nothing to attach to; kubectl logs %s -c %s shows its output", container, key(pod.Namespace, pod.Name), pod.Name, container))
		case cur.Exists:
			return nil
		case time.Now().After(deadline):
			return errdefs.InvalidInput(fmt.Sprintf("container %s of pod %s has not started after %v", container, key(pod.Namespace, pod.Name), startWait))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func orUnknown(s slurmclient.JobState) slurmclient.JobState {
	if s == "" {
		return "unknown"
	}
	return s
}
