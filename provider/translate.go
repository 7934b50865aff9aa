package provider

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// TranslateConfig is what translation needs from the node's configuration.
type TranslateConfig struct {
	NodeName  string
	Partition string
	// SharedRoot is the fetch endpoint's root as jobs on compute nodes see it.
	SharedRoot string
	Runtime    string
	// HostPathPrefixes allow-lists hostPath volumes.
	HostPathPrefixes []string
	// AllowedOptions allow-lists keys of the options annotation.
	AllowedOptions []string
	// Allowed allow-lists the other annotations' values.
	Allowed Allowed
	// RestartBackoff and MaxRestartBackoff are the back-off before a
	// container is restarted (restartPolicy OnFailure, Always): the first,
	// doubling up to the second, reset once a container ran twice the
	// second (the kubelet's 10s, 5m and 10m by default).
	RestartBackoff, MaxRestartBackoff time.Duration
	// LogTimeHelper is the time-index helper (cmd/slurm-vk-logtime) as
	// jobs find it: a command in PATH or an absolute path (default
	// slurm-vk-logtime). Without it on a compute node, logs are whole but
	// --timestamps and --since fall back to the log's mtime.
	LogTimeHelper string
	// Agent is the tunnel agent (cmd/slurm-vk-agent) as compute nodes
	// find it, and AgentURL the fetch endpoint as they reach it: with
	// both, each job starts the agent, which connects out so that kubectl
	// exec reaches the pod's containers. Without them exec is refused.
	Agent, AgentURL string
	// AgentCAFile is the CA of an https AgentURL, as compute nodes find
	// it (empty: the nodes' system roots).
	AgentCAFile string
	// Allocatable is what the node offers pods: the limits the downward
	// API gives a container that sets none (the provider fills it in).
	Allocatable corev1.ResourceList
}

// Defaults for TranslateConfig's restart back-off, as the kubelet's.
const (
	DefaultRestartBackoff    = 10 * time.Second
	DefaultMaxRestartBackoff = 5 * time.Minute
	DefaultLogTimeHelper     = "slurm-vk-logtime"
)

// StagedFile is a file to upload through the fetch endpoint before the job
// is submitted.
type StagedFile struct {
	Path string // relative to the pod's staging directory
	Data []byte
	Mode uint32
}

// Plan is a pod translated: the job to submit and the files it needs.
type Plan struct {
	Spec   slurmclient.JobSpec
	Staged []StagedFile
	// Agent: the script starts the exec agent, whose token the provider
	// stages (not here: a translation is the same every time).
	Agent bool
}

// InvalidPodError says why a pod cannot run as a Slurm job. The pod fails
// with Reason and Message; no job is submitted.
type InvalidPodError struct {
	Reason  string
	Message string
	// Missing is set when the pod refers to a ConfigMap, Secret or key
	// that does not exist (yet): like the kubelet, the provider lets such
	// a pod wait for it rather than fail.
	Missing bool
	err     error // the cause, if the message wraps one
}

func (e *InvalidPodError) Error() string { return e.Reason + ": " + e.Message }

// Unwrap returns the cause, for errors.Is and errors.As.
func (e *InvalidPodError) Unwrap() error { return e.err }

// invalid is an InvalidPodError with a message as fmt.Errorf formats it
// (%w keeps the cause).
func invalid(reason, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &InvalidPodError{Reason: reason, Message: err.Error(), err: errors.Unwrap(err)}
}

// missing is invalid for a reference to an object or key that may still
// be created.
func missing(reason, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &InvalidPodError{Reason: reason, Message: err.Error(), Missing: true, err: errors.Unwrap(err)}
}

// Lookups resolve the objects a pod refers to. Missing objects are errors
// unless the reference is optional.
type Lookups struct {
	ConfigMap func(namespace, name string) (*corev1.ConfigMap, error)
	Secret    func(namespace, name string) (*corev1.Secret, error)
	// Pod finds a pod (logs of pods that ended before a restart); optional.
	Pod func(namespace, name string) (*corev1.Pod, error)
	// Services lists a namespace's services, for the variables a kubelet
	// gives containers (serviceEnv); optional: none without it.
	Services func(namespace string) ([]*corev1.Service, error)
}

// Translate turns a pod into a job. It is pure: everything it needs comes
// in through its arguments.
func Translate(pod *corev1.Pod, cfg TranslateConfig, look Lookups) (*Plan, error) {
	ref := PodRef(pod)
	if err := ref.Validate(); err != nil {
		return nil, invalid("InvalidPodIdentity", "%w", err)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, invalid("NoContainers", "the pod has no containers")
	}
	switch pod.Spec.RestartPolicy {
	case "", corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		return nil, invalid("InvalidRestartPolicy", "restartPolicy %q: want Always, OnFailure or Never", pod.Spec.RestartPolicy)
	}
	runtime := cfg.Runtime
	if r, ok := pod.Annotations[AnnotationRuntime]; ok {
		if err := allow(AnnotationRuntime, r, cfg.Runtime, cfg.Allowed.Runtimes); err != nil {
			return nil, err
		}
		runtime = r
	}
	rt, ok := runtimes[runtime]
	if !ok {
		return nil, invalid("UnsupportedRuntime", "runtime %q: want podman, charliecloud, apptainer, enroot or none", runtime)
	}
	t := &translator{pod: pod, cfg: cfg, look: look, runtime: runtime, rt: rt, ref: ref,
		podDir: ref.Path(cfg.SharedRoot), stagedIndex: map[string]int{}}
	var err error
	if t.shape, err = parseShape(pod); err != nil {
		return nil, err
	}
	if t.shape != nil {
		if err := t.shape.containers(pod, runtime); err != nil {
			return nil, err
		}
		// Whole nodes are the site's to give, as the options annotation's
		// "exclusive" is.
		if t.shape.exclusive && !contains(cfg.AllowedOptions, "exclusive") {
			return nil, invalid(ReasonAnnotationNotAllowed, "annotation %s: whole nodes are not allowed on this node (its administrators allow them by listing exclusive in the allowed options)", AnnotationExclusive)
		}
	}
	if err := t.volumes(); err != nil {
		return nil, err
	}
	if t.hostsLines, err = t.etcHosts(); err != nil {
		return nil, err
	}
	if rt.image {
		if err := t.pullSecrets(); err != nil {
			return nil, err
		}
	}
	var inits, mains []string
	size := 0 // of the containers' blocks so far: each is bounded, their sum too
	for i := range pod.Spec.InitContainers {
		block, err := t.container(&pod.Spec.InitContainers[i])
		if err == nil {
			err = scriptRoom(&size, block)
		}
		if err != nil {
			return nil, err
		}
		inits = append(inits, block)
	}
	for i := range pod.Spec.Containers {
		block, err := t.container(&pod.Spec.Containers[i])
		if err == nil {
			err = scriptRoom(&size, block)
		}
		if err != nil {
			return nil, err
		}
		mains = append(mains, block)
	}
	if t.probes, err = t.stageProbes(); err != nil {
		return nil, err
	}
	spec, err := t.jobSpec()
	if err != nil {
		return nil, err
	}
	spec.Script = t.script(inits, mains)
	return &Plan{Spec: spec, Staged: t.staged, Agent: t.agent()}, nil
}

// MaxScript bounds the containers' part of a job script: Slurm's own
// default bound on a batch script (max_script_size, 4 MiB). Each
// container is bounded by MaxContainerArgs; without a bound on their sum
// a pod of many containers, each referring to a large value, would make
// the provider build (and Slurm refuse) hundreds of MiB.
const MaxScript = 4 << 20

// scriptRoom adds block to the running size, or refuses the pod once the
// sum is past MaxScript.
func scriptRoom(size *int, block string) error {
	if *size += len(block); *size > MaxScript {
		return invalid("ScriptTooLarge", "the containers' environment and arguments come to more than %d MiB of job script, more than Slurm takes by default (max_script_size)", MaxScript>>20)
	}
	return nil
}

type translator struct {
	pod     *corev1.Pod
	cfg     TranslateConfig
	look    Lookups
	runtime string // its name
	rt      containerRuntime
	ref     layout.Pod
	podDir  string // as jobs see it
	shape   *shape // nil: one task on one node

	staged      []StagedFile
	stagedIndex map[string]int
	// pullAuth is the staged registry auth file from imagePullSecrets, as
	// jobs see it, if any; pullAuths its entries by registry host.
	pullAuth  string
	pullAuths map[string]json.RawMessage
	// mounts by volume name: host path as jobs see it, and read-only.
	vols map[string]volume
	// hostIP: a container's env has the node's address (hostIPVar).
	hostIP bool
	// services: serviceEnv's variables, once listed.
	services *envList
	// probes: the agent runs the pod's probes and hooks (staged).
	probes bool
	// hosts is the pod's /etc/hosts file as jobs see it, "" where it is
	// the node's; hostsLines the script's lines that write it (hosts.go).
	hosts, hostsLines string
}

// stagedDir stages the directory rel (Mode has os.ModeDir, Data is nil).
func (t *translator) stagedDir(rel string) {
	t.stage(rel, nil, uint32(os.ModeDir|0o755))
}

func (t *translator) stage(rel string, data []byte, mode uint32) string {
	if i, ok := t.stagedIndex[rel]; ok {
		t.staged[i] = StagedFile{Path: rel, Data: data, Mode: mode}
	} else {
		t.stagedIndex[rel] = len(t.staged)
		t.staged = append(t.staged, StagedFile{Path: rel, Data: data, Mode: mode})
	}
	return t.ref.Path(t.cfg.SharedRoot, layout.Staged(rel))
}

// subPath is a mount's subPath, or its subPathExpr expanded with the
// container's environment as a kubelet expands it. An expansion that is
// absolute or climbs out (a value of "..", "/tmp") leaves the container
// waiting with CreateContainerConfigError, as on a kubelet, and the pod is
// tried again (its env may change: an annotation); a reference to a
// Secret-backed variable is refused (the Secret is read only in the job).
func subPath(c *corev1.Container, m corev1.VolumeMount, env []envVar) (string, error) {
	sub := m.SubPath
	if m.SubPathExpr != "" {
		if m.SubPath != "" {
			return "", invalid("InvalidSubPath", "container %q mount %q: subPath and subPathExpr are exclusive", c.Name, m.Name)
		}
		v, err := expand(m.SubPathExpr, lookup(env))
		if err == nil && strings.Contains(v, refMark) {
			err = errors.New("it refers to a Secret-backed variable")
		}
		if err != nil {
			return "", invalid("InvalidSubPath", "container %q mount %q: subPathExpr %q: %w", c.Name, m.Name, m.SubPathExpr, err)
		}
		if err := layout.ValidateStaged(v); err != nil {
			return "", missing("CreateContainerConfigError", "container %q mount %q: subPathExpr %q expands to %q: %w", c.Name, m.Name, m.SubPathExpr, v, err)
		}
		return v, nil
	}
	if sub != "" {
		if err := layout.ValidateStaged(sub); err != nil {
			return "", invalid("InvalidSubPath", "container %q mount %q: %w", c.Name, m.Name, err)
		}
	}
	return sub, nil
}

// container renders one container's shell function body.
func (t *translator) container(c *corev1.Container) (string, error) {
	if err := layout.ValidateContainer(c.Name); err != nil {
		return "", invalid("InvalidContainerName", "%w", err)
	}
	env, size, err := t.env(c)
	if err != nil {
		return "", err
	}
	rc := resolved{name: c.Name, image: c.Image, pullPolicy: c.ImagePullPolicy, workingDir: c.WorkingDir, env: env, stdin: t.stdin(c), tty: c.TTY}
	if rc.uid, rc.gid, err = runAs(t.pod, c); err != nil {
		return "", err
	}
	if err := rc.securityContext(c); err != nil {
		return "", err
	}
	for _, m := range c.VolumeMounts {
		v, ok := t.vols[m.Name]
		if !ok {
			return "", invalid("VolumeNotFound", "container %q mounts unknown volume %q", c.Name, m.Name)
		}
		host := v.hostPath
		sub, err := subPath(c, m, env)
		if err != nil {
			return "", err
		}
		if sub != "" {
			host = path.Join(host, sub)
		}
		rc.mounts = append(rc.mounts, mount{host: host, path: m.MountPath, readOnly: v.readOnly || m.ReadOnly, create: v.emptyDir, root: v.hostPath})
		rc.volEnv = append(rc.volEnv, envVar{name: "SLURM_VK_MOUNT_" + strings.ToUpper(envSafe(m.Name)), value: host})
	}
	for _, s := range append(append([]string{c.Image, c.WorkingDir}, c.Command...), c.Args...) {
		if strings.Contains(s, "\x00") {
			return "", invalid("InvalidContainer", "container %q: image, workingDir, command and args may not contain a NUL byte", c.Name)
		}
	}
	room := MaxContainerArgs - size
	if rc.command, err = expandAll(c, "command", c.Command, env, &room); err != nil {
		return "", err
	}
	if rc.args, err = expandAll(c, "args", c.Args, env, &room); err != nil {
		return "", err
	}
	if t.rt.image {
		if err := rc.validateForContainer(); err != nil {
			return "", err
		}
	}
	if t.hosts != "" && !mountsEtcHosts(c) {
		rc.mounts = append(rc.mounts, mount{host: t.hosts, path: "/etc/hosts"})
	}
	if t.rt.messageFile && c.TerminationMessagePath != "" {
		// The attempt's message file (run names it in svk_msg) at the
		// container's terminationMessagePath.
		p := c.TerminationMessagePath
		if !path.IsAbs(p) || strings.ContainsAny(p, ",:\n\x00 \t\\#") {
			return "", invalid("InvalidTerminationMessagePath", "container %q: terminationMessagePath %q must be absolute and contain no ',', ':', blanks, '\\', '#' or control characters", c.Name, p)
		}
		rc.mounts = append(rc.mounts, mount{host: refMark + "svk_msg" + refMark, path: p})
	}

	var b strings.Builder
	// An emptyDir (and a subPath in it) is created like the kubelet does:
	// writable by every user, for a container that runs as another
	// (runAsUser) than the job's; only the pod's own containers reach it
	// (the pod's directory is the job user's alone).
	for _, m := range rc.mounts {
		if m.create {
			fmt.Fprintf(&b, "\t\tmkdir -p %s && chmod 0777 %s || exit 125\n", shq(m.host), shq(m.root))
		}
	}
	if !t.rt.runAs {
		// The job's user it is: a container that asks for another fails
		// with the reason, rather than run as someone it did not ask for.
		for _, id := range []struct {
			v          *int64
			flag, name string
		}{{rc.uid, "-u", "runAsUser"}, {rc.gid, "-g", "runAsGroup"}} {
			if id.v != nil {
				fmt.Fprintf(&b, "\t\t[ \"$(id %s)\" = %d ] || { svk_reason RunAsNotSupported \"runtime %s runs a container as the job's user ($(id -u):$(id -g)), not as %s %d\"; exit 126; }\n", id.flag, *id.v, t.runtime, id.name, *id.v)
			}
		}
	}
	body, err := t.rt.launch(t, rc)
	if err != nil {
		return "", err
	}
	// Right before the exec, once the image is pulled and the env and
	// directory are the container's: the attempt's start marker (the
	// container is running from here on, not while it is being created)
	// and, with an agent, the PID it enters the container by (removed by
	// run when it ends).
	// The PID first: once the provider sees the start, exec finds it.
	var started string
	if t.agent() {
		started = fmt.Sprintf("\t\techo \"$BASHPID\" >\"$svk_pod_dir\"/%s || :\n", shq(path.Join(layout.PIDsDir, c.Name)))
		if rc.stdin {
			// The attach FIFO run opened, as the container's stdin, from
			// here on only (when run found an agent on the node).
			started += "\t\t[ -z \"${svk_in:-}\" ] || exec <&\"$svk_in\" {svk_in}<&-\n"
		}
	}
	started += fmt.Sprintf("\t\t: >\"$svk_dir/%s\" || :\n", layout.AttemptName("$svk_n", layout.KindStart))
	if i := strings.LastIndex(body, "\t\texec "); i >= 0 {
		body = body[:i] + started + body[i:]
	} else {
		body = started + body
	}
	b.WriteString(body)
	return fmt.Sprintf("c_%s() {\n\t(\n%s\t)\n}\n", envSafe(c.Name), b.String()), nil
}

// runAs is the user and group a container runs as, from its
// securityContext over the pod's (nil: the runtime's default, the job's
// user); runAsNonRoot with user 0 is refused as a kubelet refuses it.
func runAs(pod *corev1.Pod, c *corev1.Container) (uid, gid *int64, err error) {
	var nonRoot *bool
	if p := pod.Spec.SecurityContext; p != nil {
		uid, gid, nonRoot = p.RunAsUser, p.RunAsGroup, p.RunAsNonRoot
	}
	if s := c.SecurityContext; s != nil {
		if s.RunAsUser != nil {
			uid = s.RunAsUser
		}
		if s.RunAsGroup != nil {
			gid = s.RunAsGroup
		}
		if s.RunAsNonRoot != nil {
			nonRoot = s.RunAsNonRoot
		}
	}
	for _, id := range []*int64{uid, gid} {
		if id != nil && (*id < 0 || *id > 1<<32-2) {
			return nil, nil, invalid("CreateContainerConfigError", "container %q: runAsUser and runAsGroup must be between 0 and 4294967294", c.Name)
		}
	}
	if nonRoot != nil && *nonRoot && uid != nil && *uid == 0 {
		return nil, nil, invalid("CreateContainerConfigError", "container %q: container's runAsUser breaks non-root policy", c.Name)
	}
	return uid, gid, nil
}
