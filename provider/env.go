package provider

import (
	"errors"
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

// envList is a container's environment in the kubelet's order: a later
// definition of a name replaces the earlier one in place.
type envList struct {
	vars  []envVar
	index map[string]int
}

func (l *envList) set(v envVar) {
	if i, ok := l.index[v.name]; ok {
		l.vars[i] = v
		return
	}
	if l.index == nil {
		l.index = map[string]int{}
	}
	l.index[v.name] = len(l.vars)
	l.vars = append(l.vars, v)
}

// env resolves a container's envFrom, then its env (where $(VAR) refers
// to what came before).
func (t *translator) env(c *corev1.Container) ([]envVar, error) {
	var l envList
	for _, from := range c.EnvFrom {
		if err := t.envFrom(c, from, &l); err != nil {
			return nil, err
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
			l.set(envVar{name: e.Name, value: expand(e.Value, l.vars)})
			continue
		}
		v, ok, err := t.valueFrom(c, e)
		if err != nil {
			return nil, err
		}
		if ok {
			l.set(v)
		}
	}
	return l.vars, nil
}

// envSecret stages a Secret's value for a container's environment and
// returns the file as jobs see it.
func (t *translator) envSecret(c *corev1.Container, secret, key string, data []byte) string {
	return t.stage(layout.StagedEnvSecret(c.Name, secret, key), data, 0o600)
}

// envFrom adds every key of a ConfigMap or Secret whose name (with the
// prefix) is a valid variable name.
func (t *translator) envFrom(c *corev1.Container, from corev1.EnvFromSource, l *envList) error {
	switch {
	case from.ConfigMapRef != nil:
		cm, err := t.look.ConfigMap(t.pod.Namespace, from.ConfigMapRef.Name)
		if err != nil {
			if from.ConfigMapRef.Optional != nil && *from.ConfigMapRef.Optional {
				return nil
			}
			return missing("ConfigMapNotFound", "envFrom configMap %q: %w", from.ConfigMapRef.Name, err)
		}
		for _, k := range sortedKeys(cm.Data) {
			if strings.Contains(cm.Data[k], "\x00") {
				return invalid("InvalidEnvValue", "container %q: configMap %q key %q may not contain a NUL byte in an environment variable", c.Name, from.ConfigMapRef.Name, k)
			}
			if envName.MatchString(from.Prefix + k) {
				l.set(envVar{name: from.Prefix + k, value: cm.Data[k]})
			}
		}
	case from.SecretRef != nil:
		s, err := t.look.Secret(t.pod.Namespace, from.SecretRef.Name)
		if err != nil {
			if from.SecretRef.Optional != nil && *from.SecretRef.Optional {
				return nil
			}
			return missing("SecretNotFound", "envFrom secret %q: %w", from.SecretRef.Name, err)
		}
		for _, k := range sortedKeys(s.Data) {
			if envName.MatchString(from.Prefix + k) {
				l.set(envVar{name: from.Prefix + k, file: t.envSecret(c, from.SecretRef.Name, k, s.Data[k])})
			}
		}
	}
	return nil
}

// valueFrom resolves one env entry's valueFrom; ok is false for an
// optional reference to something that does not exist (no variable).
func (t *translator) valueFrom(c *corev1.Container, e corev1.EnvVar) (v envVar, ok bool, err error) {
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		s, err := t.fieldRef(vf.FieldRef.FieldPath)
		if err == nil && strings.Contains(s, "\x00") {
			err = errors.New("the value contains a NUL byte")
		}
		if err != nil {
			return v, false, invalid("InvalidFieldRef", "container %q env %s: %w", c.Name, e.Name, err)
		}
		return envVar{name: e.Name, value: s}, true, nil
	case vf.ResourceFieldRef != nil:
		r := *vf.ResourceFieldRef
		if r.ContainerName == "" {
			r.ContainerName = c.Name
		}
		s, err := t.resourceRef(&r)
		if err != nil {
			return v, false, invalid("InvalidResourceFieldRef", "container %q env %s: %w", c.Name, e.Name, err)
		}
		return envVar{name: e.Name, value: s}, true, nil
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := t.look.ConfigMap(t.pod.Namespace, ref.Name)
		s, found := "", false
		if err == nil {
			s, found = cm.Data[ref.Key]
		}
		if strings.Contains(s, "\x00") {
			return v, false, invalid("InvalidEnvValue", "container %q env %s: configMap %q key %q may not contain a NUL byte", c.Name, e.Name, ref.Name, ref.Key)
		}
		if !found {
			if ref.Optional != nil && *ref.Optional {
				return v, false, nil
			}
			return v, false, missing("ConfigMapKeyNotFound", "container %q env %s: configMap %q key %q not found", c.Name, e.Name, ref.Name, ref.Key)
		}
		return envVar{name: e.Name, value: s}, true, nil
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		sec, err := t.look.Secret(t.pod.Namespace, ref.Name)
		var data []byte
		found := false
		if err == nil {
			data, found = sec.Data[ref.Key]
		}
		if !found {
			if ref.Optional != nil && *ref.Optional {
				return v, false, nil
			}
			return v, false, missing("SecretKeyNotFound", "container %q env %s: secret %q key %q not found", c.Name, e.Name, ref.Name, ref.Key)
		}
		return envVar{name: e.Name, file: t.envSecret(c, ref.Name, ref.Key, data)}, true, nil
	default:
		return v, false, invalid("UnsupportedEnvSource", "container %q env %s: unsupported valueFrom", c.Name, e.Name)
	}
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
