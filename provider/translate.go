package provider

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Annotations a pod may carry to steer its job.
const (
	AnnotationPrefix      = "slurm-vk.io/"
	AnnotationPartition   = AnnotationPrefix + "partition"
	AnnotationAccount     = AnnotationPrefix + "account"
	AnnotationQOS         = AnnotationPrefix + "qos"
	AnnotationReservation = AnnotationPrefix + "reservation"
	AnnotationConstraint  = AnnotationPrefix + "constraint"
	AnnotationRuntime     = AnnotationPrefix + "runtime"
	// AnnotationOptions is a JSON object of further job description fields
	// (slurmrestd names), each of which must be in Config.AllowedOptions.
	AnnotationOptions = AnnotationPrefix + "options"
)

// Runtimes a container can run under.
const (
	RuntimeApptainer    = "apptainer"
	RuntimeEnroot       = "enroot"
	RuntimePodman       = "podman"
	RuntimeCharliecloud = "charliecloud"
	RuntimeNone         = "none" // the command runs directly on the compute node
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
}

// InvalidPodError says why a pod cannot run as a Slurm job. The pod fails
// with Reason and Message; no job is submitted.
type InvalidPodError struct {
	Reason  string
	Message string
}

func (e *InvalidPodError) Error() string { return e.Reason + ": " + e.Message }

func invalid(reason, format string, args ...any) error {
	return &InvalidPodError{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Lookups resolve the objects a pod refers to. Missing objects are errors
// unless the reference is optional.
type Lookups struct {
	ConfigMap func(namespace, name string) (*corev1.ConfigMap, error)
	Secret    func(namespace, name string) (*corev1.Secret, error)
	// Pod finds a pod (logs of pods that ended before a restart); optional.
	Pod func(namespace, name string) (*corev1.Pod, error)
}

// JobComment is the comment that ties a job to its pod: node, namespace,
// name and UID. Recovery after a restart relies on it.
func JobComment(node string, pod *corev1.Pod) string {
	return "slurm-vk:" + node + ":" + pod.Namespace + "/" + pod.Name + ":" + string(pod.UID)
}

// ParseJobComment is the inverse of JobComment; ok is false for jobs that
// are not this node's.
func ParseJobComment(node, comment string) (namespace, name, uid string, ok bool) {
	rest, found := strings.CutPrefix(comment, "slurm-vk:"+node+":")
	if !found {
		return "", "", "", false
	}
	nsName, uid, found := strings.Cut(rest, ":")
	if !found {
		return "", "", "", false
	}
	namespace, name, found = strings.Cut(nsName, "/")
	return namespace, name, uid, found && uid != ""
}

// PodRef is the pod's directory in the layout contract.
func PodRef(pod *corev1.Pod) layout.Pod {
	return layout.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Translate turns a pod into a job. It is pure: everything it needs comes
// in through its arguments.
func Translate(pod *corev1.Pod, cfg TranslateConfig, look Lookups) (*Plan, error) {
	ref := PodRef(pod)
	if err := ref.Validate(); err != nil {
		return nil, invalid("InvalidPodIdentity", "%v", err)
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, invalid("NoContainers", "the pod has no containers")
	}
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			return nil, invalid("SidecarNotSupported", "init container %q has restartPolicy Always (a sidecar): not supported on Slurm nodes yet; run it as a regular container", c.Name)
		}
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
	switch runtime {
	case RuntimeApptainer, RuntimeEnroot, RuntimePodman, RuntimeCharliecloud, RuntimeNone:
	default:
		return nil, invalid("UnsupportedRuntime", "runtime %q: want podman, charliecloud, apptainer, enroot or none", runtime)
	}
	t := &translator{pod: pod, cfg: cfg, look: look, runtime: runtime, ref: ref,
		podDir: ref.Path(cfg.SharedRoot), stagedIndex: map[string]int{}}
	if err := t.volumes(); err != nil {
		return nil, err
	}
	if runtime != RuntimeNone {
		if err := t.pullSecrets(); err != nil {
			return nil, err
		}
	}
	var inits, mains []string
	for i := range pod.Spec.InitContainers {
		block, err := t.container(&pod.Spec.InitContainers[i])
		if err != nil {
			return nil, err
		}
		inits = append(inits, block)
	}
	for i := range pod.Spec.Containers {
		block, err := t.container(&pod.Spec.Containers[i])
		if err != nil {
			return nil, err
		}
		mains = append(mains, block)
	}
	spec, err := t.jobSpec()
	if err != nil {
		return nil, err
	}
	spec.Script = t.script(inits, mains)
	return &Plan{Spec: spec, Staged: t.staged}, nil
}

type translator struct {
	pod     *corev1.Pod
	cfg     TranslateConfig
	look    Lookups
	runtime string
	ref     layout.Pod
	podDir  string // as jobs see it

	staged      []StagedFile
	stagedIndex map[string]int
	// pullAuth is the staged registry auth file from imagePullSecrets, as
	// jobs see it, if any; pullAuths its entries by registry host.
	pullAuth  string
	pullAuths map[string]json.RawMessage
	// mounts by volume name: host path as jobs see it, and read-only.
	vols map[string]volume
}

type volume struct {
	hostPath string
	readOnly bool
	emptyDir bool // created by the job
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

// volumes stages every volume's files and records where each is on the
// compute node.
func (t *translator) volumes() error {
	t.vols = map[string]volume{}
	for _, v := range t.pod.Spec.Volumes {
		dir := layout.StagedVolume(v.Name)
		switch {
		case v.EmptyDir != nil:
			t.vols[v.Name] = volume{hostPath: t.ref.Path(t.cfg.SharedRoot, layout.WorkDir, v.Name), emptyDir: true}
		case v.ConfigMap != nil:
			if err := t.configMapVolume(dir, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, v.ConfigMap.DefaultMode); err != nil {
				return err
			}
			t.vols[v.Name] = volume{hostPath: t.ref.Path(t.cfg.SharedRoot, layout.Staged(dir)), readOnly: true}
		case v.Secret != nil:
			if err := t.secretVolume(dir, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, v.Secret.DefaultMode); err != nil {
				return err
			}
			t.vols[v.Name] = volume{hostPath: t.ref.Path(t.cfg.SharedRoot, layout.Staged(dir)), readOnly: true}
		case v.DownwardAPI != nil:
			if err := t.downwardVolume(dir, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode); err != nil {
				return err
			}
			t.vols[v.Name] = volume{hostPath: t.ref.Path(t.cfg.SharedRoot, layout.Staged(dir)), readOnly: true}
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				var err error
				switch {
				case src.ConfigMap != nil:
					err = t.configMapVolume(dir, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, v.Projected.DefaultMode)
				case src.Secret != nil:
					err = t.secretVolume(dir, src.Secret.Name, src.Secret.Items, src.Secret.Optional, v.Projected.DefaultMode)
				case src.DownwardAPI != nil:
					err = t.downwardVolume(dir, src.DownwardAPI.Items, v.Projected.DefaultMode)
				case src.ServiceAccountToken != nil:
					// Jobs cannot reach the API server; the token would be
					// useless there and is a credential better not copied.
					continue
				default:
					err = invalid("UnsupportedVolume", "projected volume %q: only configMap, secret, downwardAPI and serviceAccountToken sources are supported", v.Name)
				}
				if err != nil {
					return err
				}
			}
			t.vols[v.Name] = volume{hostPath: t.ref.Path(t.cfg.SharedRoot, layout.Staged(dir)), readOnly: true}
		case v.HostPath != nil:
			p := path.Clean(v.HostPath.Path)
			if !allowedHostPath(p, t.cfg.HostPathPrefixes) {
				return invalid("HostPathNotAllowed", "hostPath %q is not under an allowed prefix (%s)", v.HostPath.Path, strings.Join(t.cfg.HostPathPrefixes, ", "))
			}
			t.vols[v.Name] = volume{hostPath: p}
		default:
			return invalid("UnsupportedVolume", "volume %q: the Slurm provider supports emptyDir, configMap, secret, downwardAPI, projected and allow-listed hostPath volumes", v.Name)
		}
	}
	return nil
}

func allowedHostPath(p string, prefixes []string) bool {
	for _, pre := range prefixes {
		pre = path.Clean(pre)
		if p == pre || strings.HasPrefix(p, strings.TrimSuffix(pre, "/")+"/") {
			return true
		}
	}
	return false
}

func fileMode(def *int32, item *int32, fallback uint32) uint32 {
	switch {
	case item != nil:
		return uint32(*item) & 0o777
	case def != nil:
		return uint32(*def) & 0o777
	}
	return fallback
}

func (t *translator) configMapVolume(dir, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	cm, err := t.look.ConfigMap(t.pod.Namespace, name)
	if err != nil {
		if optional != nil && *optional {
			return nil
		}
		return invalid("ConfigMapNotFound", "configMap %q: %v", name, err)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return t.keysToFiles(dir, "configMap "+name, data, items, defMode, 0o644)
}

func (t *translator) secretVolume(dir, name string, items []corev1.KeyToPath, optional *bool, defMode *int32) error {
	s, err := t.look.Secret(t.pod.Namespace, name)
	if err != nil {
		if optional != nil && *optional {
			return nil
		}
		return invalid("SecretNotFound", "secret %q: %v", name, err)
	}
	// Secrets are 0600 unless the pod asks otherwise.
	return t.keysToFiles(dir, "secret "+name, s.Data, items, defMode, 0o600)
}

func (t *translator) keysToFiles(dir, what string, data map[string][]byte, items []corev1.KeyToPath, defMode *int32, fallback uint32) error {
	if len(items) == 0 {
		keys := make([]string, 0, len(data))
		for k := range data {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return invalid("KeyNotFound", "%s has no key %q", what, it.Key)
		}
		rel := dir + "/" + it.Path
		if err := layout.ValidateStaged(rel); err != nil {
			return invalid("InvalidVolumePath", "%s key %q: %v", what, it.Key, err)
		}
		t.stage(rel, v, fileMode(defMode, it.Mode, fallback))
	}
	return nil
}

func (t *translator) downwardVolume(dir string, items []corev1.DownwardAPIVolumeFile, defMode *int32) error {
	for _, it := range items {
		var val string
		var err error
		switch {
		case it.FieldRef != nil:
			val, err = t.fieldRef(it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			val, err = t.resourceRef(it.ResourceFieldRef)
		default:
			err = fmt.Errorf("no fieldRef or resourceFieldRef")
		}
		if err != nil {
			return invalid("InvalidDownwardAPI", "downwardAPI file %q: %v", it.Path, err)
		}
		rel := dir + "/" + it.Path
		if err := layout.ValidateStaged(rel); err != nil {
			return invalid("InvalidVolumePath", "downwardAPI file %q: %v", it.Path, err)
		}
		t.stage(rel, []byte(val), fileMode(defMode, it.Mode, 0o644))
	}
	return nil
}

// fieldRef resolves the downward API fields known before the job runs.
func (t *translator) fieldRef(fp string) (string, error) {
	p := t.pod
	switch fp {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return t.cfg.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "metadata.labels", "metadata.annotations":
		m := p.Labels
		if fp == "metadata.annotations" {
			m = p.Annotations
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%q\n", k, m[k])
		}
		return b.String(), nil
	}
	for _, kind := range []string{"labels", "annotations"} {
		if key, ok := strings.CutPrefix(fp, "metadata."+kind+"['"); ok && strings.HasSuffix(key, "']") {
			key = strings.TrimSuffix(key, "']")
			if kind == "labels" {
				return p.Labels[key], nil
			}
			return p.Annotations[key], nil
		}
	}
	return "", fmt.Errorf("field %q is not available to Slurm jobs", fp)
}

func (t *translator) resourceRef(r *corev1.ResourceFieldSelector) (string, error) {
	var c *corev1.Container
	for i := range t.pod.Spec.Containers {
		if t.pod.Spec.Containers[i].Name == r.ContainerName || (r.ContainerName == "" && i == 0) {
			c = &t.pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return "", fmt.Errorf("no container %q", r.ContainerName)
	}
	kind, name, _ := strings.Cut(r.Resource, ".")
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "0", nil
	}
	div := resource.MustParse("1")
	if !r.Divisor.IsZero() {
		div = r.Divisor
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(div.MilliValue()))), 10), nil
}

// envVar is one environment variable of a container: a literal value, or a
// staged file read when the container starts (so secrets stay out of the
// job script and of the job's environment as slurmrestd shows it).
type envVar struct {
	name  string
	value string
	file  string // as jobs see it
}

func (t *translator) env(c *corev1.Container) ([]envVar, error) {
	var out []envVar
	index := map[string]int{}
	set := func(v envVar) {
		if i, ok := index[v.name]; ok {
			out[i] = v
			return
		}
		index[v.name] = len(out)
		out = append(out, v)
	}
	secretFile := func(secret, key string, data []byte) string {
		return t.stage(layout.StagedEnvSecret(c.Name, secret, key), data, 0o600)
	}
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := t.look.ConfigMap(t.pod.Namespace, from.ConfigMapRef.Name)
			if err != nil {
				if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
					continue
				}
				return nil, invalid("ConfigMapNotFound", "envFrom configMap %q: %v", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				if strings.Contains(cm.Data[k], "\x00") {
					return nil, invalid("InvalidEnvValue", "container %q: configMap %q key %q may not contain a NUL byte in an environment variable", c.Name, from.ConfigMapRef.Name, k)
				}
				if envName.MatchString(from.Prefix + k) {
					set(envVar{name: from.Prefix + k, value: cm.Data[k]})
				}
			}
		case from.SecretRef != nil:
			s, err := t.look.Secret(t.pod.Namespace, from.SecretRef.Name)
			if err != nil {
				if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
					continue
				}
				return nil, invalid("SecretNotFound", "envFrom secret %q: %v", from.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(s.Data) {
				if envName.MatchString(from.Prefix + k) {
					set(envVar{name: from.Prefix + k, file: secretFile(from.SecretRef.Name, k, s.Data[k])})
				}
			}
		}
	}
	for _, e := range c.Env {
		if !envName.MatchString(e.Name) {
			return nil, invalid("InvalidEnvName", "container %q: environment variable name %q must be a C identifier for Slurm jobs", c.Name, e.Name)
		}
		if e.ValueFrom == nil {
			if strings.Contains(e.Value, "\x00") {
				return nil, invalid("InvalidEnvValue", "container %q env %s: a value may not contain a NUL byte", c.Name, e.Name)
			}
			set(envVar{name: e.Name, value: expand(e.Value, out)})
			continue
		}
		vf := e.ValueFrom
		switch {
		case vf.FieldRef != nil:
			v, err := t.fieldRef(vf.FieldRef.FieldPath)
			if err == nil && strings.Contains(v, "\x00") {
				err = fmt.Errorf("the value contains a NUL byte")
			}
			if err != nil {
				return nil, invalid("InvalidFieldRef", "container %q env %s: %v", c.Name, e.Name, err)
			}
			set(envVar{name: e.Name, value: v})
		case vf.ResourceFieldRef != nil:
			r := *vf.ResourceFieldRef
			if r.ContainerName == "" {
				r.ContainerName = c.Name
			}
			v, err := t.resourceRef(&r)
			if err != nil {
				return nil, invalid("InvalidResourceFieldRef", "container %q env %s: %v", c.Name, e.Name, err)
			}
			set(envVar{name: e.Name, value: v})
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm, err := t.look.ConfigMap(t.pod.Namespace, ref.Name)
			v, ok := "", false
			if err == nil {
				v, ok = cm.Data[ref.Key]
			}
			if strings.Contains(v, "\x00") {
				return nil, invalid("InvalidEnvValue", "container %q env %s: configMap %q key %q may not contain a NUL byte", c.Name, e.Name, ref.Name, ref.Key)
			}
			if !ok {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, invalid("ConfigMapKeyNotFound", "container %q env %s: configMap %q key %q not found", c.Name, e.Name, ref.Name, ref.Key)
			}
			set(envVar{name: e.Name, value: v})
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			s, err := t.look.Secret(t.pod.Namespace, ref.Name)
			var v []byte
			ok := false
			if err == nil {
				v, ok = s.Data[ref.Key]
			}
			if !ok {
				if ref.Optional != nil && *ref.Optional {
					continue
				}
				return nil, invalid("SecretKeyNotFound", "container %q env %s: secret %q key %q not found", c.Name, e.Name, ref.Name, ref.Key)
			}
			set(envVar{name: e.Name, file: secretFile(ref.Name, ref.Key, v)})
		default:
			return nil, invalid("UnsupportedEnvSource", "container %q env %s: unsupported valueFrom", c.Name, e.Name)
		}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// refMark brackets, in an expanded string, a reference to a file-backed
// (Secret) variable: its value is only read when the job starts, so shq
// writes the reference as "${NAME}" instead of quoting it. No pod string
// can forge it: it holds 128 random bits drawn when the process starts,
// between NULs, which every pod string is refused for anyway (a NUL never
// reaches exec in an argument or environment value).
var refMark = func() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return "\x00" + hex.EncodeToString(b[:]) + "\x00"
}()

// expand resolves $(VAR) references to earlier variables, as the kubelet
// does; $$ escapes a dollar. A reference to a file-backed variable becomes
// a run-time reference (refMark), so the Secret's value is never in the
// script. References to unknown variables are left as written.
func expand(s string, env []envVar) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i:], ')'); end > 0 {
				name := s[i+2 : i+end]
				for _, e := range env {
					if e.name != name {
						continue
					}
					if e.file != "" {
						b.WriteString(refMark + name + refMark)
					} else {
						b.WriteString(e.value)
					}
					i += end
					goto next
				}
			}
		}
		b.WriteByte('$')
	next:
	}
	return b.String()
}

func expandAll(in []string, env []envVar) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, env)
	}
	return out
}

// container renders one container's shell function body.
func (t *translator) container(c *corev1.Container) (string, error) {
	if err := layout.ValidateContainer(c.Name); err != nil {
		return "", invalid("InvalidContainerName", "%v", err)
	}
	env, err := t.env(c)
	if err != nil {
		return "", err
	}
	rc := resolved{name: c.Name, image: c.Image, pullPolicy: c.ImagePullPolicy, workingDir: c.WorkingDir, env: env}
	for _, m := range c.VolumeMounts {
		v, ok := t.vols[m.Name]
		if !ok {
			return "", invalid("VolumeNotFound", "container %q mounts unknown volume %q", c.Name, m.Name)
		}
		host := v.hostPath
		if m.SubPath != "" {
			if err := layout.ValidateStaged(m.SubPath); err != nil {
				return "", invalid("InvalidSubPath", "container %q mount %q: %v", c.Name, m.Name, err)
			}
			host = path.Join(host, m.SubPath)
		}
		rc.mounts = append(rc.mounts, mount{host: host, path: m.MountPath, readOnly: v.readOnly || m.ReadOnly, create: v.emptyDir})
		rc.volEnv = append(rc.volEnv, envVar{name: "SLURM_VK_MOUNT_" + strings.ToUpper(envSafe(m.Name)), value: host})
	}
	for _, s := range append(append([]string{c.Image, c.WorkingDir}, c.Command...), c.Args...) {
		if strings.Contains(s, "\x00") {
			return "", invalid("InvalidContainer", "container %q: image, workingDir, command and args may not contain a NUL byte", c.Name)
		}
	}
	rc.command = expandAll(c.Command, env)
	rc.args = expandAll(c.Args, env)
	if t.runtime != RuntimeNone {
		if err := rc.validateForContainer(); err != nil {
			return "", err
		}
	}

	var b strings.Builder
	// An emptyDir mounted with a subPath is created like the kubelet does.
	for _, m := range rc.mounts {
		if m.create {
			fmt.Fprintf(&b, "\t\tmkdir -p %s || exit 125\n", shq(m.host))
		}
	}
	var body string
	switch t.runtime {
	case RuntimeNone:
		body, err = launchNone(rc)
	case RuntimeApptainer:
		body, err = t.launchApptainer(rc)
	case RuntimePodman:
		body, err = t.launchPodman(rc)
	case RuntimeCharliecloud:
		body, err = t.launchCharliecloud(rc)
	case RuntimeEnroot:
		body, err = t.launchEnroot(rc)
	}
	if err != nil {
		return "", err
	}
	b.WriteString(body)
	return fmt.Sprintf("c_%s() {\n\t(\n%s\t)\n}\n", envSafe(c.Name), b.String()), nil
}

// exportEnv writes the lines that export env in the container function's
// shell (under prefix, where the runtime reads its own): literal values
// inline; file-backed ones read at start with `read` up to a NUL (an empty
// delimiter), which keeps trailing newlines.
func exportEnv(b *strings.Builder, env []envVar, prefix string) {
	for _, e := range env {
		if e.file != "" {
			fmt.Fprintf(b, "\t\tIFS= read -r -d '' %s%s <%s || true\n\t\texport %s%s\n", prefix, e.name, shq(e.file), prefix, e.name)
		} else {
			fmt.Fprintf(b, "\t\texport %s%s=%s\n", prefix, e.name, shq(e.value))
		}
	}
}

// launchNone runs the command directly on the compute node, in the shell's
// environment: there is no image, so the pod's env is the process's.
func launchNone(c resolved) (string, error) {
	if len(c.command) == 0 && len(c.args) == 0 {
		return "", invalid("NoCommand", "container %q: runtime none needs a command (there is no image entrypoint)", c.name)
	}
	var b strings.Builder
	exportEnv(&b, append(c.volEnv, c.env...), "")
	if c.workingDir != "" {
		fmt.Fprintf(&b, "\t\tcd %s || exit 126\n", shq(c.workingDir))
	}
	fmt.Fprintf(&b, "\t\texec %s\n", shqAll(append(c.command, c.args...)))
	return b.String(), nil
}

func envSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
}

// shq quotes s for bash: single quotes, with embedded ones closed, escaped
// and reopened. Nothing inside is expanded but run-time references
// (refMark), which become "${NAME}": one word whatever the value holds.
func shq(s string) string {
	if !strings.Contains(s, refMark) {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	for i, part := range strings.Split(s, refMark) {
		switch {
		case i%2 == 1:
			b.WriteString(`"${` + part + `}"`)
		case part != "":
			b.WriteString(shq(part))
		}
	}
	return b.String()
}

func shqAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = shq(s)
	}
	return strings.Join(q, " ")
}

// runFunction is the script's run and svk_reason functions: a container's
// attempts, each logged, timed and with its exit marker, in files named by
// fetch/layout for the attempt in $n (so the script and the endpoint agree
// by construction).
var runFunction = func() string {
	f := func(kind string) string { return layout.AttemptName("$n", kind) }
	var old []string // the attempt before the previous one: every kind
	for _, k := range layout.AttemptKinds {
		old = append(old, "\"$dir/"+layout.AttemptName("$((n - 2))", k)+"\"")
	}
	return strings.NewReplacer(
		"{LOG}", f(layout.KindLog), "{EXIT}", f(layout.KindExit), "{START}", f(layout.KindStart), "{TIMES}", f(layout.KindTimes),
		"{REASON}", layout.ReasonName("$n"), "{EXITTMP}", layout.ExitTempName("$n"), "{OLD}", strings.Join(old, " "),
		"{WORK}", layout.WorkDir, "{MAXATTEMPT}", strconv.Itoa(layout.MaxAttempt),
	).Replace(`run() { # run NAME FUNC POLICY: a container's attempts, each logged, timed and with its exit marker
	local stop=0
	trap 'stop=1' TERM
	local dir="$pod_dir/$1" n=0 rc began sampler delay=$backoff
	mkdir -p "$dir" && cd "$dir" || return 125
	while :; do
		[ "$n" -lt 2 ] || rm -f {OLD}
		rm -f "$dir/{REASON}"
		: >"$dir/{START}" && : >>"$dir/{LOG}" || return 125
		sampler=
		if [ -n "$logtime" ]; then
			"$logtime" "$dir/{LOG}" "$dir/{TIMES}" </dev/null &
			sampler=$!
		fi
		began=$SECONDS
		"$2" >>"$dir/{LOG}" 2>&1
		rc=$?
		[ -z "$sampler" ] || { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; }
		{ echo "$rc"; cat "$dir/{REASON}" 2>/dev/null || :; } >"$dir/{EXITTMP}" && mv -f "$dir/{EXITTMP}" "$dir/{EXIT}"
		rm -f "$dir/{REASON}"
		case $3 in
		Always) ;;
		OnFailure) [ "$rc" -ne 0 ] || return 0 ;;
		*) return "$rc" ;;
		esac
		[ "$stop" -eq 0 ] && [ "$n" -lt {MAXATTEMPT} ] || return "$rc"
		[ $((SECONDS - began)) -lt $((2 * backoff_max)) ] || delay=$backoff
		sleep "$delay" &
		wait $!
		[ "$stop" -eq 0 ] || { kill $! 2>/dev/null; return "$rc"; }
		delay=$((delay * 2 > backoff_max ? backoff_max : delay * 2))
		n=$((n + 1))
	done
}
svk_reason() { printf '%s\n%s\n' "$1" "$2" >"$dir/{REASON}"; } # REASON MESSAGE, for run's marker
mkdir -p "$pod_dir/{WORK}" || exit 125
`)
}()

// restartPolicy is the pod's, Always when unset (as the API server
// defaults it).
func restartPolicy(pod *corev1.Pod) corev1.RestartPolicy {
	if pod.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return pod.Spec.RestartPolicy
}

// initPolicy is how init containers restart: on failure, unless the pod
// never restarts anything (the kubelet's rule).
func initPolicy(pod *corev1.Pod) corev1.RestartPolicy {
	if restartPolicy(pod) == corev1.RestartPolicyNever {
		return corev1.RestartPolicyNever
	}
	return corev1.RestartPolicyOnFailure
}

func seconds(d, def time.Duration) int {
	if d <= 0 {
		d = def
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

// script is the batch script: init containers in order (stopping at the
// first that fails for good), then every container at once, each restarted
// under the pod's restartPolicy with the kubelet's back-off. Each attempt's
// output goes to its own log, timed by the log-time helper beside it, and
// its exit code to its marker, written atomically after the last byte; the
// job exits with the first non-zero final code. Attempts older than the
// previous one are removed, as the kubelet keeps one dead container.
func (t *translator) script(inits, mains []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/bash\n# slurm-vk: pod %s/%s uid %s\n", t.pod.Namespace, t.pod.Name, t.pod.UID)
	fmt.Fprintf(&b, "pod_dir=%s\n", shq(t.podDir))
	helper := t.cfg.LogTimeHelper
	if helper == "" {
		helper = DefaultLogTimeHelper
	}
	fmt.Fprintf(&b, "backoff=%d backoff_max=%d\nlogtime=$(command -v %s 2>/dev/null || :)\n",
		seconds(t.cfg.RestartBackoff, DefaultRestartBackoff), seconds(t.cfg.MaxRestartBackoff, DefaultMaxRestartBackoff), shq(helper))
	// The marker holds the exit code, then, when the container function
	// left one (svk_reason: a pull failure...), a reason and a message.
	// SIGTERM (a delete, the time limit: Slurm signals every process of
	// the job) is for the containers: the shells that run them only note
	// it (a trap with a handler, which the container's own process does
	// not inherit), so they live on to write each container's marker, and
	// restart nothing after it.
	b.WriteString(runFunction)
	switch t.runtime {
	case RuntimePodman:
		b.WriteString(podmanHelpers)
	case RuntimeCharliecloud:
		b.WriteString(charliecloudHelpers)
	case RuntimeApptainer:
		b.WriteString(imageFileHelpers + apptainerHelpers)
	case RuntimeEnroot:
		b.WriteString(imageFileHelpers + enrootHelpers)
	}
	for _, block := range inits {
		b.WriteString(block)
	}
	for _, block := range mains {
		b.WriteString(block)
	}
	for _, c := range t.pod.Spec.InitContainers {
		fmt.Fprintf(&b, "run %s c_%s %s || exit $?\n", shq(c.Name), envSafe(c.Name), initPolicy(t.pod))
	}
	b.WriteString("pids=()\n")
	for _, c := range t.pod.Spec.Containers {
		fmt.Fprintf(&b, "run %s c_%s %s &\npids+=($!)\n", shq(c.Name), envSafe(c.Name), restartPolicy(t.pod))
	}
	b.WriteString(`trap '' TERM
status=0
for p in "${pids[@]}"; do
	wait "$p"
	rc=$?
	if [ "$status" -eq 0 ] && [ "$rc" -ne 0 ]; then status=$rc; fi
done
exit "$status"
`)
	return b.String()
}

// jobSpec sets resources, placement and identity.
func (t *translator) jobSpec() (slurmclient.JobSpec, error) {
	p := t.pod
	spec := slurmclient.JobSpec{
		Name:      truncate("vk-"+p.Namespace+"-"+p.Name, 200),
		Comment:   JobComment(t.cfg.NodeName, p),
		WorkDir:   t.ref.Path(t.cfg.SharedRoot, layout.WorkDir),
		Env:       []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_VK_POD=" + p.Namespace + "/" + p.Name},
		Stdout:    t.ref.Path(t.cfg.SharedRoot, layout.JobOutput),
		Partition: t.cfg.Partition,
	}
	a := p.Annotations
	al := t.cfg.Allowed
	for _, c := range []struct {
		annotation, own string
		list            []string
	}{
		{AnnotationPartition, t.cfg.Partition, al.Partitions},
		{AnnotationAccount, "", al.Accounts},
		{AnnotationQOS, "", al.QOS},
		{AnnotationReservation, "", al.Reservations},
		{AnnotationConstraint, "", al.Constraints},
	} {
		if err := allow(c.annotation, a[c.annotation], c.own, c.list); err != nil {
			return spec, err
		}
	}
	if v := a[AnnotationPartition]; v != "" {
		spec.Partition = v
	}
	spec.Account, spec.QOS, spec.Reservation, spec.Constraints = a[AnnotationAccount], a[AnnotationQOS], a[AnnotationReservation], a[AnnotationConstraint]

	// Containers run at once, init containers one by one: the job needs
	// the larger of the containers' sum and the biggest init container.
	cpu, mem, gpu := effective(p.Spec.Containers, p.Spec.InitContainers)
	if cpu > 0 {
		spec.CPUsPerTask = int(math.Ceil(float64(cpu) / 1000))
	}
	if mem > 0 {
		spec.MemoryMB = int64(math.Ceil(float64(mem) / (1 << 20)))
	}
	if gpu > 0 {
		spec.Gres = fmt.Sprintf("gpu:%d", gpu)
	}
	if d := p.Spec.ActiveDeadlineSeconds; d != nil && *d > 0 {
		spec.TimeLimit = time.Duration(*d) * time.Second
	}
	if raw := a[AnnotationOptions]; raw != "" {
		var opts map[string]any
		if err := json.Unmarshal([]byte(raw), &opts); err != nil {
			return spec, invalid("InvalidOptions", "annotation %s must be a JSON object: %v", AnnotationOptions, err)
		}
		for k := range opts {
			if reservedOption(k) {
				return spec, invalid("OptionNotAllowed", "annotation %s: option %q is set by slurm-vk itself or by a node setting; use the slurm-vk.io/ annotation for it where there is one", AnnotationOptions, k)
			}
			if !contains(t.cfg.AllowedOptions, k) {
				return spec, invalid("OptionNotAllowed", "annotation %s: option %q is not allowed on this node (allowed: %s)", AnnotationOptions, k, strings.Join(t.cfg.AllowedOptions, ", "))
			}
		}
		spec.Extra = opts
	}
	return spec, nil
}

// effective returns the pod's CPU (millicores), memory (bytes) and GPUs:
// requests, else limits, per container.
func effective(containers, inits []corev1.Container) (cpu, mem, gpu int64) {
	one := func(c corev1.Container) (int64, int64, int64) {
		get := func(name corev1.ResourceName) resource.Quantity {
			if q, ok := c.Resources.Requests[name]; ok {
				return q
			}
			return c.Resources.Limits[name]
		}
		g := get("nvidia.com/gpu")
		cq, mq := get(corev1.ResourceCPU), get(corev1.ResourceMemory)
		return cq.MilliValue(), mq.Value(), g.Value()
	}
	for _, c := range containers {
		a, b, g := one(c)
		cpu, mem, gpu = cpu+a, mem+b, gpu+g
	}
	for _, c := range inits {
		a, b, g := one(c)
		cpu, mem, gpu = max(cpu, a), max(mem, b), max(gpu, g)
	}
	return cpu, mem, gpu
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
