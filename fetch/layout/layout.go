// Package layout is the on-disk contract between the provider, the batch
// scripts it generates, and the fetch endpoint: where a pod's files live
// under the shared root. It is the one place that builds those paths.
//
//	<root>/<namespace>_<pod>_<uid>/               the pod directory
//	    <container>/<attempt>.log                 stdout+stderr, raw bytes
//	    <container>/<attempt>.start               empty; its mtime is when the attempt started
//	    <container>/<attempt>.times               when the log's bytes were written (fetch/logtime)
//	    <container>/<attempt>.exit                exit code, written when it ends
//	    <container>/<attempt>.msg                 the container's terminationMessagePath (its runtime binds it)
//	    <container>/.<attempt>.reason, .exit.tmp  the job script's own, never served
//	    slurm-%j.out                              Slurm's output of the job (not a container's)
//	    _staged/<path>                            files the provider uploads
//	    _work/                                    scratch (emptyDir volumes)
//	    _work/.pids/<container>                   its main process's PID, while it runs (tunnel agent)
//	    .deleted                                  pod gone; removed after retention
//
// Names are validated so that no component can contain '/', '_' (the pod
// directory separator) or be "." or "..", and "_staged"/"_work" can never
// collide with a container name (DNS-1123 labels have no '_').
package layout

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

const (
	// StagedDir holds files uploaded through the fetch endpoint.
	StagedDir = "_staged"
	// WorkDir holds per-pod scratch space created by the job.
	WorkDir = "_work"
	// DeletedMarker marks a pod directory whose pod is gone.
	DeletedMarker = ".deleted"
	// MaxStagedPath bounds a staged file's relative path.
	MaxStagedPath = 1024
	// MaxStagedDepth bounds a staged file's directory depth.
	MaxStagedDepth = 16
	// MaxAttempt bounds a container attempt (restart count).
	MaxAttempt = 1 << 20
)

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	uidPattern       = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
	stagedSegment    = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)
)

// Pod identifies a pod's directory.
type Pod struct {
	Namespace string
	Name      string
	UID       string
}

// Validate checks the names: namespace a DNS-1123 label, name a DNS-1123
// subdomain, UID letters, digits and dashes (Kubernetes uses UUIDs).
func (p Pod) Validate() error {
	if len(p.Namespace) > 63 || !dns1123Label.MatchString(p.Namespace) {
		return fmt.Errorf("namespace %q is not a DNS-1123 label", p.Namespace)
	}
	if len(p.Name) > 253 || !dns1123Subdomain.MatchString(p.Name) {
		return fmt.Errorf("pod name %q is not a DNS-1123 subdomain", p.Name)
	}
	if len(p.UID) > 64 || !uidPattern.MatchString(p.UID) {
		return fmt.Errorf("pod UID %q must be 1-64 letters, digits or dashes", p.UID)
	}
	return nil
}

// Dir is the pod directory's name under the root.
func (p Pod) Dir() string { return p.Namespace + "_" + p.Name + "_" + p.UID }

// String is namespace/name (uid), for messages.
func (p Pod) String() string { return p.Namespace + "/" + p.Name + " (" + p.UID + ")" }

// ParseDir is the inverse of Dir.
func ParseDir(dir string) (Pod, error) {
	parts := strings.Split(dir, "_")
	if len(parts) != 3 {
		return Pod{}, fmt.Errorf("%q is not a pod directory name", dir)
	}
	p := Pod{Namespace: parts[0], Name: parts[1], UID: parts[2]}
	return p, p.Validate()
}

// ValidateContainer checks a container name (a DNS-1123 label).
func ValidateContainer(name string) error {
	if len(name) > 63 || !dns1123Label.MatchString(name) {
		return fmt.Errorf("container name %q is not a DNS-1123 label", name)
	}
	return nil
}

// ValidateVolume checks a volume name (a DNS-1123 label, as the API
// server requires): it names a directory of the pod's.
func ValidateVolume(name string) error {
	if len(name) > 63 || !dns1123Label.MatchString(name) {
		return fmt.Errorf("volume name %q is not a DNS-1123 label", name)
	}
	return nil
}

// ValidateAttempt checks a container attempt number.
func ValidateAttempt(attempt int) error {
	if attempt < 0 || attempt > MaxAttempt {
		return fmt.Errorf("attempt %d out of range 0..%d", attempt, MaxAttempt)
	}
	return nil
}

// ValidateStaged checks a staged file's path relative to the staging
// directory: slash-separated segments of letters, digits, '-', '_' and '.',
// none of them "." or "..", no leading slash, bounded length and depth.
func ValidateStaged(rel string) error {
	if rel == "" || len(rel) > MaxStagedPath {
		return fmt.Errorf("staged path must be 1-%d bytes", MaxStagedPath)
	}
	segs := strings.Split(rel, "/")
	if len(segs) > MaxStagedDepth {
		return fmt.Errorf("staged path %q is deeper than %d", rel, MaxStagedDepth)
	}
	for _, s := range segs {
		if s == "." || s == ".." || !stagedSegment.MatchString(s) {
			return fmt.Errorf("staged path %q: segment %q is not allowed", rel, s)
		}
	}
	return nil
}

// The kinds of a container attempt's files.
const (
	KindLog   = "log"   // stdout+stderr, raw bytes
	KindExit  = "exit"  // exit code (and reason, message), written when it ends
	KindStart = "start" // empty; its mtime is when the attempt started
	KindTimes = "times" // the log's time index (fetch/logtime)
	KindMsg   = "msg"   // the container's termination message file (bound at terminationMessagePath)
	// KindReady and KindStarted are empty files the tunnel agent keeps
	// while the attempt's readiness probe passes and once its startup
	// probe has passed (containers without the probe have none).
	KindReady   = "ready"
	KindStarted = "started"
	// KindPostStart is an empty file the agent makes once the attempt's
	// postStart hook has run: a kubelet's container is running from then.
	KindPostStart = "poststart"
)

// AttemptKinds are every kind an attempt may have on disk.
var AttemptKinds = []string{KindLog, KindTimes, KindStart, KindExit, KindMsg, KindReady, KindStarted, KindPostStart}

// AttemptName is an attempt's file name in its container directory. The
// job script calls it with a shell expression for the attempt ("$n"), Go
// code with the number: both sides name files through this one function.
func AttemptName(attempt, kind string) string { return attempt + "." + kind }

// ReasonName and ExitTempName are the job script's own files of an
// attempt, hidden (a leading dot) and never served: the reason the
// container function leaves for the exit marker, and the marker before it
// is renamed into place (so the marker appears whole, after the last byte
// of the log).
func ReasonName(attempt string) string   { return "." + attempt + ".reason" }
func ExitTempName(attempt string) string { return "." + AttemptName(attempt, KindExit) + ".tmp" }

// JobOutput is Slurm's own output file of a pod's job (slurmstepd's
// notices), relative to the pod directory; %j is the job ID. It is not a
// container log.
const JobOutput = "slurm-%j.out"

func attemptFile(container string, attempt int, kind string) string {
	return path.Join(container, AttemptName(strconv.Itoa(attempt), kind))
}

// LogFile is a container attempt's output file, relative to the pod
// directory.
func LogFile(container string, attempt int) string { return attemptFile(container, attempt, KindLog) }

// ExitFile is a container attempt's exit marker, relative to the pod
// directory.
func ExitFile(container string, attempt int) string { return attemptFile(container, attempt, KindExit) }

// StartFile is a container attempt's start marker, relative to the pod
// directory: the job creates it as the attempt starts.
func StartFile(container string, attempt int) string {
	return attemptFile(container, attempt, KindStart)
}

// TimesFile is a container attempt's time index (fetch/logtime), relative
// to the pod directory.
func TimesFile(container string, attempt int) string {
	return attemptFile(container, attempt, KindTimes)
}

// ReadyFile and StartedFile are an attempt's probe flags (KindReady,
// KindStarted).
func ReadyFile(container string, attempt int) string {
	return attemptFile(container, attempt, KindReady)
}

func StartedFile(container string, attempt int) string {
	return attemptFile(container, attempt, KindStarted)
}

// PostStartFile is an attempt's KindPostStart flag.
func PostStartFile(container string, attempt int) string {
	return attemptFile(container, attempt, KindPostStart)
}

// ParseAttemptFile splits a file name of a container directory into its
// attempt and kind; ok is false for anything else.
func ParseAttemptFile(name string) (attempt int, kind string, ok bool) {
	num, kind, found := strings.Cut(name, ".")
	if !found || !slices.Contains(AttemptKinds, kind) {
		return 0, "", false
	}
	if num == "" || len(num) > 7 || (len(num) > 1 && num[0] == '0') ||
		strings.ContainsFunc(num, func(r rune) bool { return r < '0' || r > '9' }) {
		return 0, "", false
	}
	n, err := strconv.Atoi(num)
	if err != nil || ValidateAttempt(n) != nil {
		return 0, "", false
	}
	return n, kind, true
}

// Staged files the provider writes, relative to the staging directory.

// StagedVolume is the directory of a ConfigMap, Secret, projected or
// downward API volume's files.
func StagedVolume(volume string) string { return path.Join("volumes", volume) }

// StagedEnvSecret is a Secret's value used as a container's environment
// variable (read by the job, never in the script).
func StagedEnvSecret(container, secret, key string) string {
	return path.Join("env", container, "secret", secret, key)
}

// StagedPullAuth is the registry auth file from imagePullSecrets.
const StagedPullAuth = "pull/auth.json"

// StagedPullCredentials is the directory of a container's registry
// username and password files, for runtimes that take them one by one.
func StagedPullCredentials(container string) string { return path.Join("pull", container) }

// StagedRuntimeFile is a container's file for its runtime (enroot's rc).
func StagedRuntimeFile(runtime, container, ext string) string {
	return path.Join(runtime, container+"."+ext)
}

// StagedAgentToken is the pod's tunnel agent token: the agent started in
// the job proves with it which pod it serves (package tunnel).
const StagedAgentToken = "agent/token"

// PIDsDir, relative to the pod directory, holds a file per running
// container, named for it, with its main process's PID: the job script
// writes it, the tunnel agent enters the container through it. In _work,
// which is never served; ".pids" cannot be a volume's name.
const PIDsDir = WorkDir + "/.pids"

// HostsFile, relative to the pod directory, is the pod's /etc/hosts as a
// kubelet writes it (its own, or the node's with the pod's hostAliases):
// the job script writes it when the job starts, the runtimes bind it at
// /etc/hosts in each container that does not mount its own.
const HostsFile = WorkDir + "/.hosts"

// StdinDir, relative to the pod directory, holds a FIFO per container
// started with stdin (kubectl attach), named for it: the container reads
// it, the tunnel agent writes what attach sends. Beside each, while the
// container runs, a file named for it plus OnceSuffix holds the PID of the
// process that keeps the FIFO open between attaches when the container's
// stdin closes after the first attach (stdinOnce).
const StdinDir = WorkDir + "/.stdin"

// OnceSuffix: see StdinDir.
const OnceSuffix = ".once"

// StagedProbes is the pod's probes and lifecycle hooks (package tunnel's
// Probes, as JSON), which the tunnel agent runs beside the containers.
const StagedProbes = "agent/probes.json"

// Staged is a staged file's path relative to the pod directory.
func Staged(rel string) string { return path.Join(StagedDir, rel) }

// Path joins root (as seen by whoever will use the path: the job on a
// compute node, or the endpoint's host), the pod directory and elem.
func (p Pod) Path(root string, elem ...string) string {
	return path.Join(append([]string{root, p.Dir()}, elem...)...)
}
