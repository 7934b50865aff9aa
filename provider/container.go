package provider

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// resolved is one container ready for a runtime: references expanded,
// volumes turned into host paths. A runtime turns it into launch lines.
type resolved struct {
	name          string
	image         string // normalized (docker.io/library/busybox:latest) once validated
	pullPolicy    corev1.PullPolicy
	command, args []string
	workingDir    string
	env           []envVar
	volEnv        []envVar // SLURM_VK_MOUNT_<VOLUME>: runtime none only
	mounts        []mount
	stdin, tty    bool   // the container's stdin is the attach FIFO; podman gives it a terminal
	uid, gid      *int64 // securityContext's runAsUser and runAsGroup (the container's over the pod's)
	// securityContext's readOnlyRootFilesystem, and allowPrivilegeEscalation
	// false (no_new_privs), each runtime's to honour or refuse.
	readOnlyRoot, noNewPrivs bool
}

// securityContext reads what of the container's securityContext a runtime
// honours (runAs aside); a privileged container is refused: jobs run as
// their Slurm user, and running one unprivileged would not be what it
// asked for.
func (rc *resolved) securityContext(c *corev1.Container) error {
	sc := c.SecurityContext
	if sc == nil {
		return nil
	}
	if sc.Privileged != nil && *sc.Privileged {
		return invalid("PrivilegedNotSupported", "container %q: privileged containers cannot run here: jobs run as their Slurm user, with no more privilege than it has", c.Name)
	}
	rc.readOnlyRoot = sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem
	rc.noNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
	return nil
}

// readOnlyRootRefused is a runtime's refusal of readOnlyRootFilesystem.
func readOnlyRootRefused(c resolved, runtime, why string) error {
	return invalid("ReadOnlyRootNotSupported", "container %q: readOnlyRootFilesystem: with runtime %s %s; use podman, apptainer or enroot", c.name, runtime, why)
}

// mount is a volume at its mountPath.
type mount struct {
	host, path string
	readOnly   bool
	create     bool   // an emptyDir: the job creates it
	root       string // the emptyDir's own directory (host without the subPath)
}

// spec is the runtime's HOST:PATH bind, with ro appended when read-only
// (each runtime spells read-only its own way).
func (m mount) spec(ro string) string {
	if m.readOnly {
		return m.host + ":" + m.path + ro
	}
	return m.host + ":" + m.path
}

// reservedSecret refuses a Secret-backed variable whose name would steer
// the runtime or the shell that starts it (see runtimeReserved).
func reservedSecret(c resolved, e envVar, runtime string) error {
	return invalid("InvalidEnvName", "container %q: variable %s comes from a Secret, and with runtime %s a Secret may not set %s (it would steer the runtime or its shell)", c.name, e.name, runtime, e.name)
}

// validateForContainer checks what a container runtime will read: the
// image must follow the distribution reference grammar (so it can never be
// read as an option), and paths must be absolute and free of the
// separators runtimes split bind specifications on (',' and ':').
func (c *resolved) validateForContainer() error {
	named, err := reference.ParseNormalizedNamed(c.image)
	if err != nil {
		return invalid("InvalidImageName", "container %q: image %q is not a valid image reference: %w", c.name, c.image, err)
	}
	c.image = reference.TagNameOnly(named).String()
	for _, m := range c.mounts {
		for _, p := range []string{m.host, m.path} {
			if !path.IsAbs(p) || strings.ContainsAny(p, ",:\n\x00") {
				return invalid("InvalidMountPath", "container %q: mount path %q must be absolute and contain no ',', ':' or control characters", c.name, p)
			}
		}
	}
	if c.workingDir != "" && !path.IsAbs(c.workingDir) {
		return invalid("InvalidWorkingDir", "container %q: workingDir %q must be absolute", c.name, c.workingDir)
	}
	return nil
}

// runtimeReserved are environment names that steer a runtime or the shell
// that starts it. A Secret-backed variable is read into the job's shell
// (podman takes it from its own environment, Charliecloud through a pipe),
// so it may not take one of these names; a literal one may.
var runtimeReserved = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "IFS", "ENV", "CDPATH",
	"PS4", "SHELLOPTS", "BASHOPTS", "GLOBIGNORE", "POSIXLY_CORRECT", "UID", "EUID", "PPID", "GROUPS", "HOSTNAME",
	"RANDOM", "SECONDS", "LINENO", "FUNCNAME", "OPTIND", "OPTARG", "REPLY"}

var runtimeReservedPrefixes = []string{"XDG_", "CONTAINERS_", "CONTAINER_", "REGISTRY_", "DOCKER_", "LD_",
	"BUILDAH_", "PODMAN_", "STORAGE_", "BASH_", "SLURM_VK_", "CH_"}

func runtimeReservedName(n string) bool {
	if contains(runtimeReserved, n) {
		return true
	}
	for _, p := range runtimeReservedPrefixes {
		if strings.HasPrefix(n, p) {
			return true
		}
	}
	return false
}

// enrootURI is enroot's form of an image reference:
// docker://[REGISTRY#]IMAGE[:TAG|@DIGEST].
func enrootURI(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "docker://" + image
	}
	rest := strings.TrimPrefix(named.String(), reference.Domain(named)+"/")
	return "docker://" + reference.Domain(named) + "#" + rest
}

// pullSecrets stages the pod's imagePullSecrets as one registry auth file
// (containers-auth.json, the format of a dockerconfigjson Secret), 0600 like
// every Secret, for the runtime's --authfile. A missing Secret is skipped,
// as the kubelet does: the pull may still succeed without it.
func (t *translator) pullSecrets() error {
	auths := map[string]json.RawMessage{}
	for _, ref := range t.pod.Spec.ImagePullSecrets {
		s, err := t.look.Secret(t.pod.Namespace, ref.Name)
		if err != nil {
			continue
		}
		var cfg struct {
			Auths map[string]json.RawMessage `json:"auths"`
		}
		switch {
		case len(s.Data[corev1.DockerConfigJsonKey]) > 0:
			err = json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg)
		case len(s.Data[corev1.DockerConfigKey]) > 0:
			err = json.Unmarshal(s.Data[corev1.DockerConfigKey], &cfg.Auths)
		default:
			err = fmt.Errorf("neither %s nor %s", corev1.DockerConfigJsonKey, corev1.DockerConfigKey)
		}
		if err != nil {
			return invalid("InvalidImagePullSecret", "imagePullSecret %q: %w", ref.Name, err)
		}
		for host, a := range cfg.Auths {
			if _, seen := auths[host]; !seen {
				auths[host] = a
			}
		}
	}
	if len(auths) == 0 {
		return nil
	}
	data, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		return err
	}
	t.pullAuths = auths
	if t.runtime == RuntimePodman {
		t.pullAuth = t.stage(layout.StagedPullAuth, data, 0o600)
	}
	return nil
}

// registryCredentials stages, for a container whose image's registry has an
// entry in the pod's imagePullSecrets, its user name and password as 0600
// files the job reads when it pulls (ch-image's CH_IMAGE_USERNAME/PASSWORD,
// apptainer's APPTAINER_DOCKER_USERNAME/PASSWORD, enroot's .credentials).
func (t *translator) registryCredentials(c resolved) (user, pass string, ok bool, err error) {
	named, perr := reference.ParseNormalizedNamed(c.image)
	if perr != nil || t.pullAuths == nil {
		return "", "", false, nil
	}
	raw, found := t.pullAuths[reference.Domain(named)]
	if !found {
		return "", "", false, nil
	}
	var a struct{ Auth, Username, Password string }
	if err := json.Unmarshal(raw, &a); err != nil {
		return "", "", false, invalid("InvalidImagePullSecret", "registry %s: %w", reference.Domain(named), err)
	}
	if a.Auth != "" {
		dec, derr := base64.StdEncoding.DecodeString(a.Auth)
		u, p, cut := strings.Cut(string(dec), ":")
		if derr != nil || !cut {
			return "", "", false, invalid("InvalidImagePullSecret", "registry %s: auth is not base64 of user:password", reference.Domain(named))
		}
		a.Username, a.Password = u, p
	}
	dir := layout.StagedPullCredentials(c.name)
	return t.stage(path.Join(dir, "username"), []byte(a.Username), 0o600), t.stage(path.Join(dir, "password"), []byte(a.Password), 0o600), true, nil
}
