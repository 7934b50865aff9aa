package provider

import (
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

type volume struct {
	hostPath string
	readOnly bool
	emptyDir bool // created by the job
}

// volumes stages every volume's files and records where each is on the
// compute node.
// fromSources tells a volume staged from API objects (configMap, secret,
// downwardAPI, projected): a directory of files that follow them.
func fromSources(v corev1.Volume) bool {
	return v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.Projected != nil
}

func (t *translator) volumes() error {
	t.vols = map[string]volume{}
	for _, v := range t.pod.Spec.Volumes {
		// The name becomes a path on the compute node: checked here, not
		// only by the API server.
		if err := layout.ValidateVolume(v.Name); err != nil {
			return invalid("InvalidVolumeName", "%w", err)
		}
		dir := layout.StagedVolume(v.Name)
		if fromSources(v) {
			// The directory first: it is what containers bind, also while
			// an optional source has no files (yet).
			t.stagedDir(dir)
		}
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
		return missing("ConfigMapNotFound", "configMap %q: %w", name, err)
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
		return missing("SecretNotFound", "secret %q: %w", name, err)
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
			return missing("KeyNotFound", "%s has no key %q", what, it.Key)
		}
		rel := dir + "/" + it.Path
		if err := layout.ValidateStaged(rel); err != nil {
			return invalid("InvalidVolumePath", "%s key %q: %w", what, it.Key, err)
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
			return invalid("InvalidDownwardAPI", "downwardAPI file %q: %w", it.Path, err)
		}
		rel := dir + "/" + it.Path
		if err := layout.ValidateStaged(rel); err != nil {
			return invalid("InvalidVolumePath", "downwardAPI file %q: %w", it.Path, err)
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

// resourceRef is a container's resource as the downward API gives it, as
// the kubelet does: a limit the container does not set is the node's
// allocatable (cpu, memory, ephemeral storage); a CPU value in (rounded up)
// multiples of the divisor's millicores, any other in its units.
func (t *translator) resourceRef(r *corev1.ResourceFieldSelector) (string, error) {
	var c *corev1.Container
	for _, cs := range [][]corev1.Container{t.pod.Spec.Containers, t.pod.Spec.InitContainers} {
		for i := range cs {
			if cs[i].Name == r.ContainerName || (r.ContainerName == "" && i == 0 && c == nil) {
				c = &cs[i]
			}
		}
	}
	if c == nil {
		return "", fmt.Errorf("no container %q", r.ContainerName)
	}
	kind, name, _ := strings.Cut(r.Resource, ".")
	var list corev1.ResourceList
	switch kind {
	case "limits":
		list = c.Resources.Limits
	case "requests":
		list = c.Resources.Requests
	default:
		return "", fmt.Errorf("unsupported container resource %q", r.Resource)
	}
	res := corev1.ResourceName(name)
	switch {
	case res == corev1.ResourceCPU, res == corev1.ResourceMemory, res == corev1.ResourceEphemeralStorage, strings.HasPrefix(name, corev1.ResourceHugePagesPrefix):
	default:
		return "", fmt.Errorf("unsupported container resource %q", r.Resource)
	}
	q, ok := list[res]
	if !ok && kind == "limits" {
		q, ok = t.cfg.Allocatable[res]
	}
	if !ok {
		q = resource.Quantity{}
	}
	div := resource.MustParse("1")
	if !r.Divisor.IsZero() {
		div = r.Divisor
	}
	if res == corev1.ResourceCPU {
		return strconv.FormatInt(int64(math.Ceil(float64(q.MilliValue())/float64(div.MilliValue()))), 10), nil
	}
	return strconv.FormatInt(int64(math.Ceil(float64(q.Value())/float64(div.Value()))), 10), nil
}
