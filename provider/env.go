package provider

import (
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// envName is what a kubelet takes as a variable's name (its relaxed
// validation, the default since Kubernetes 1.34): printable ASCII but '='.
var envName = regexp.MustCompile(`^[ -<>-~]+$`)

// shellName is a name bash can hold as a variable (and export).
var shellName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// shellVar is the job script's variable for the container variable name:
// the name itself where bash can export it, else a name of the script's
// own (ReservedEnvPrefix, which no pod variable may use) that the runtime
// line passes on under the real name ("data-1" from a ConfigMap's key).
func shellVar(name string) string {
	if shellName.MatchString(name) {
		return name
	}
	return ReservedEnvPrefix + "env_" + hex.EncodeToString([]byte(name))
}

// ReservedEnvPrefix is the job script's own: every shell variable it sets
// or reads is named so, and no container's environment may be, so a pod's
// env can never steer the script (which runtime it runs, where it writes).
const ReservedEnvPrefix = "svk_"

// checkEnvName refuses a name the job script cannot take (see envName and
// ReservedEnvPrefix).
func checkEnvName(c *corev1.Container, name, from string) error {
	if !envName.MatchString(name) {
		return invalid("InvalidEnvName", "container %q: environment variable name %q%s must be printable ASCII characters other than '='", c.Name, name, from)
	}
	if strings.HasPrefix(name, ReservedEnvPrefix) {
		return invalid("InvalidEnvName", "container %q: environment variable name %q%s: names starting with %s are reserved for the Slurm job script", c.Name, name, from, ReservedEnvPrefix)
	}
	return nil
}

// envVar is one environment variable of a container: a literal value, or a
// staged file read when the container starts (so secrets stay out of the
// job script and of the job's environment as slurmrestd shows it).
type envVar struct {
	name  string
	value string
	file  string // as jobs see it
	size  int    // NAME=value's length in a process's environment
}

// envList is a container's environment in the kubelet's order: a later
// definition of a name replaces the earlier one in place.
type envList struct {
	vars  []envVar
	index map[string]int
	// sizes are the vars' sizes (envVar.size), size their sum: what the
	// environment will take of a process's MaxContainerArgs.
	sizes []int
	size  int
	// fallback: the services' variables, which $(VAR) can refer to.
	fallback *envList
}

// set defines v (size, for a file-backed one, set by the caller), within
// the bounds a process can be started with.
func (l *envList) set(c *corev1.Container, v envVar) error {
	if v.file == "" {
		v.size = len(v.name) + 1 + len(v.value)
	}
	if v.size > MaxExpanded {
		return invalid("InvalidEnvValue", "container %q env %s: %d KiB, longer than the %d KiB Linux passes to a process", c.Name, v.name, v.size>>10, MaxExpanded>>10)
	}
	old := 0
	if i, ok := l.index[v.name]; ok {
		old = l.sizes[i]
	}
	if l.size-old+v.size > MaxContainerArgs {
		return invalid("InvalidEnvValue", "container %q: its environment comes to more than %d MiB, more than Linux passes to a process", c.Name, MaxContainerArgs>>20)
	}
	l.put(v)
	return nil
}

func (l *envList) put(v envVar) {
	if i, ok := l.index[v.name]; ok {
		l.size -= l.sizes[i]
		l.vars[i], l.sizes[i] = v, v.size
		l.size += v.size
		return
	}
	if l.index == nil {
		l.index = map[string]int{}
	}
	l.index[v.name] = len(l.vars)
	l.vars = append(l.vars, v)
	l.sizes = append(l.sizes, v.size)
	l.size += v.size
}

// lookup finds a variable defined so far, or else a service's, for
// expand.
func (l *envList) lookup(name string) (envVar, bool) {
	i, ok := l.index[name]
	if !ok {
		if l.fallback != nil {
			return l.fallback.lookup(name)
		}
		return envVar{}, false
	}
	return l.vars[i], true
}

// env resolves a container's envFrom, then its env (where $(VAR) refers
// to what came before), and returns it with its size in a process's
// environment.
func (t *translator) env(c *corev1.Container) ([]envVar, int, error) {
	var l envList
	services, err := t.serviceEnv()
	if err != nil {
		return nil, 0, err
	}
	l.fallback = services
	for _, from := range c.EnvFrom {
		if err := t.envFrom(c, from, &l); err != nil {
			return nil, 0, err
		}
	}
	for _, e := range c.Env {
		if err := checkEnvName(c, e.Name, ""); err != nil {
			return nil, 0, err
		}
		if e.ValueFrom == nil {
			if strings.Contains(e.Value, "\x00") {
				return nil, 0, invalid("InvalidEnvValue", "container %q env %s: a value may not contain a NUL byte", c.Name, e.Name)
			}
			v, err := expand(e.Value, l.lookup)
			if err != nil {
				return nil, 0, invalid("InvalidEnvValue", "container %q env %s: %w", c.Name, e.Name, err)
			}
			if err := l.set(c, envVar{name: e.Name, value: v}); err != nil {
				return nil, 0, err
			}
			continue
		}
		v, ok, err := t.valueFrom(c, e)
		if err != nil {
			return nil, 0, err
		}
		if ok {
			if err := l.set(c, v); err != nil {
				return nil, 0, err
			}
		}
	}
	// The services' variables where the container set none by the name.
	for _, v := range services.vars {
		if _, ok := l.index[v.name]; !ok {
			if err := l.set(c, v); err != nil {
				return nil, 0, err
			}
		}
	}
	return l.vars, l.size, nil
}

// nodeFields are the downward API's fields that are the address of the
// node the pod runs on (its containers share the node's network), which
// the job script reads into hostIPVar when it starts.
var nodeFields = map[string]bool{"status.hostIP": true, "status.hostIPs": true, "status.podIP": true, "status.podIPs": true}

// hostIPVar is the script's variable holding the node's address.
const hostIPVar = "svk_host_ip"

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
			if !envName.MatchString(from.Prefix + k) {
				continue
			}
			if err := checkEnvName(c, from.Prefix+k, fmt.Sprintf(" (envFrom configMap %q)", from.ConfigMapRef.Name)); err != nil {
				return err
			}
			if err := l.set(c, envVar{name: from.Prefix + k, value: cm.Data[k]}); err != nil {
				return err
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
			if !envName.MatchString(from.Prefix + k) {
				continue
			}
			if err := checkEnvName(c, from.Prefix+k, fmt.Sprintf(" (envFrom secret %q)", from.SecretRef.Name)); err != nil {
				return err
			}
			v := envVar{name: from.Prefix + k, file: t.envSecret(c, from.SecretRef.Name, k, s.Data[k]), size: len(from.Prefix+k) + 1 + len(s.Data[k])}
			if err := l.set(c, v); err != nil {
				return err
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
	case vf.FieldRef != nil && nodeFields[vf.FieldRef.FieldPath]:
		// Known where the job runs, not before: the script finds it.
		t.hostIP = true
		return envVar{name: e.Name, value: refMark + hostIPVar + refMark}, true, nil
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
		return envVar{name: e.Name, file: t.envSecret(c, ref.Name, ref.Key, data), size: len(e.Name) + 1 + len(data)}, true, nil
	default:
		return v, false, invalid("UnsupportedEnvSource", "container %q env %s: unsupported valueFrom", c.Name, e.Name)
	}
}

// shellNamesOnly refuses the container's env names bash cannot hold, for
// a runtime that passes the environment through a shell (why says how).
func shellNamesOnly(c resolved, runtime, why string) error {
	for _, e := range c.env {
		if !shellName.MatchString(e.name) {
			return invalid("InvalidEnvName", "container %q: environment variable name %q: with runtime %s a name must be a C identifier (%s)", c.name, e.name, runtime, why)
		}
	}
	return nil
}

// envLine is NAME=value of a variable bash cannot export, for a runtime's
// command line: its value, or its shellVar where it is read from a file
// (a Secret's value is then on that command line while the runtime
// client starts; the chart README's security model says so).
func envLine(e envVar) string {
	if e.file != "" {
		return e.name + "=" + refMark + shellVar(e.name) + refMark
	}
	return e.name + "=" + e.value
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Bounds on what expansion makes. Linux refuses to start a process with
// one argument or environment string longer than MAX_ARG_STRLEN (128 KiB),
// or with all of them together over ARG_MAX (2 MiB with the default 8 MiB
// stack), so a container past them could never start on any node; the
// bounds also keep a pod from making the provider build gigabytes out of
// $(VAR) references to a large value (the API server lets a pod be 1.5 MiB
// and a ConfigMap value 1 MiB).
const (
	MaxExpanded      = 128 << 10 // one value or argument
	MaxContainerArgs = 2 << 20   // a container's environment and arguments together
)

// errTooLong is expand's refusal of a result past MaxExpanded.
var errTooLong = fmt.Errorf("longer than %d KiB once $(VAR) references are expanded (Linux passes no longer string to a process)", MaxExpanded>>10)

// varNameByte tells whether b can be part of a variable's name: the
// kubelet's own set (C identifiers, and '-' and '.').
func varNameByte(b byte) bool {
	return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-' || b == '.'
}

// expand resolves $(VAR) references to earlier variables, as the kubelet
// does; $$ escapes a dollar. A reference to a file-backed variable becomes
// a run-time reference (refMark), so the Secret's value is never in the
// script. References to unknown variables are left as written.
//
// It is linear in the length of s: a name is read only while its bytes
// can be a name's, so no byte is looked at twice (looking ahead to the
// next ')' from every "$(" made a value of "$(" repeated cost its square).
// A result past MaxExpanded is errTooLong.
func expand(s string, lookup func(string) (envVar, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		if len(s) > MaxExpanded {
			return "", errTooLong
		}
		return s, nil
	}
	var b strings.Builder
	put := func(v string) bool {
		if b.Len()+len(v) > MaxExpanded {
			return false
		}
		b.WriteString(v)
		return true
	}
	for len(s) > 0 {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			i = len(s)
		}
		if !put(s[:i]) {
			return "", errTooLong
		}
		s = s[i:]
		if s == "" {
			break
		}
		lit := "$" // what the '$' stands for if it starts no reference
		switch {
		case strings.HasPrefix(s, "$$"):
			s = s[2:]
		case strings.HasPrefix(s, "$("):
			k := 2
			for k < len(s) && varNameByte(s[k]) {
				k++
			}
			if k < len(s) && s[k] == ')' {
				if e, ok := lookup(s[2:k]); ok {
					lit = e.value
					if e.file != "" {
						lit = refMark + shellVar(e.name) + refMark
					}
					s = s[k+1:]
					break
				}
			}
			s = s[1:]
		default:
			s = s[1:]
		}
		if !put(lit) {
			return "", errTooLong
		}
	}
	return b.String(), nil
}

// lookup is expand's view of a finished environment.
func lookup(env []envVar) func(string) (envVar, bool) {
	m := make(map[string]envVar, len(env))
	for _, e := range env {
		m[e.name] = e
	}
	return func(name string) (envVar, bool) { e, ok := m[name]; return e, ok }
}

// expandAll expands a command or args; what may be passed is bounded as
// expand and MaxContainerArgs say (room is what the environment left).
func expandAll(c *corev1.Container, what string, in []string, env []envVar, room *int) ([]string, error) {
	out := make([]string, len(in))
	look := lookup(env)
	for i, s := range in {
		v, err := expand(s, look)
		if err != nil {
			return nil, invalid("InvalidContainer", "container %q %s[%d]: %w", c.Name, what, i, err)
		}
		if *room -= len(v) + 1; *room < 0 {
			return nil, invalid("InvalidContainer", "container %q: its environment and arguments come to more than %d MiB, more than Linux passes to a process", c.Name, MaxContainerArgs>>20)
		}
		out[i] = v
	}
	return out, nil
}

// exportEnv writes the lines that export env in the container function's
// shell (under prefix, where the runtime reads its own): literal values
// inline; file-backed ones read at start with `read` up to a NUL (an empty
// delimiter), which keeps trailing newlines. A name bash cannot export is
// only read into its shellVar, for the runtime line to pass on (envLine).
func exportEnv(b *strings.Builder, env []envVar, prefix string) {
	for _, e := range env {
		if !shellName.MatchString(e.name) {
			if e.file != "" {
				fmt.Fprintf(b, "\t\tIFS= read -r -d '' %s <%s || true\n", shellVar(e.name), shq(e.file))
			}
			continue
		}
		if e.file != "" {
			fmt.Fprintf(b, "\t\tIFS= read -r -d '' %s%s <%s || true\n\t\texport %s%s\n", prefix, e.name, shq(e.file), prefix, e.name)
		} else {
			fmt.Fprintf(b, "\t\texport %s%s=%s\n", prefix, e.name, shq(prefixRefs(e.value, prefix)))
		}
	}
}
