package provider

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

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
