package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/slurmkube/slurm-vk/provider"
)

// options are the flags; a YAML file (-config) can set any of them, by the
// same names, and flags given on the command line win.
type options struct {
	Config           string `json:"-"`
	Check            bool   `json:"-"`
	Kubeconfig       string `json:"kubeconfig"`
	NodeName         string `json:"nodeName"`
	Partition        string `json:"partition"`
	SlurmrestdURL    string `json:"slurmrestdURL"`
	SlurmTokenFile   string `json:"slurmTokenFile"`
	SlurmUser        string `json:"slurmUser"`
	SlurmAPIVersion  string `json:"slurmAPIVersion"`
	SlurmCAFile      string `json:"slurmCAFile"`
	FetchURL         string `json:"fetchURL"`
	FetchTokenFile   string `json:"fetchTokenFile"`
	FetchCAFile      string `json:"fetchCAFile"`
	SharedRoot       string `json:"sharedRoot"`
	Runtime          string `json:"runtime"`
	HostPathPrefixes string `json:"hostPathPrefixes"`
	AllowedOptions   string `json:"allowedOptions"`
	// What the slurm-vk.io/ annotations may choose besides the node's own
	// runtime and partition; comma-separated, "*" for anything.
	AllowedRuntimes     string `json:"allowedRuntimes"`
	AllowedPartitions   string `json:"allowedPartitions"`
	AllowedAccounts     string `json:"allowedAccounts"`
	AllowedQOS          string `json:"allowedQOS"`
	AllowedReservations string `json:"allowedReservations"`
	AllowedConstraints  string `json:"allowedConstraints"`
	Listen              string `json:"listen"`
	NodeIP              string `json:"nodeIP"`
	TLSCert             string `json:"tlsCert"`
	TLSKey              string `json:"tlsKey"`
	ClientCA            string `json:"clientCA"`
	// InsecureKubeletAPI serves the kubelet API without authentication.
	InsecureKubeletAPI bool            `json:"insecureKubeletAPI"`
	StatusInterval     metav1.Duration `json:"statusInterval"` // "5s" in the file
	RestartBackoff     metav1.Duration `json:"restartBackoff"`
	MaxRestartBackoff  metav1.Duration `json:"maxRestartBackoff"`
	LogTimeHelper      string          `json:"logTimeHelper"`
	Agent              string          `json:"agent"`
	AgentURL           string          `json:"agentURL"`
	AgentCAFile        string          `json:"agentCAFile"`
	NodeInterval       metav1.Duration `json:"nodeInterval"`
	MaxPods            int             `json:"maxPods"`
	PodSyncWorkers     int             `json:"podSyncWorkers"`
	KubeAPIQPS         float64         `json:"kubeAPIQPS"`
	KubeAPIBurst       int             `json:"kubeAPIBurst"`
	QueueFactor        float64         `json:"queueFactor"`
	MetricsListen      string          `json:"metricsListen"`
	NodeLabels         string          `json:"nodeLabels"`
	NodeTaints         string          `json:"nodeTaints"`
	NoProviderTaint    bool            `json:"noProviderTaint"`
	Verbose            bool            `json:"verbose"`
	// Tenancy maps namespaces to Slurm users; only in the -config file.
	Tenancy provider.Tenancy `json:"tenancy"`

	labels map[string]string
	taints []corev1.Taint
}

// parseOptions reads the flags, the -config file under them, and checks
// the result.
func parseOptions(args []string) (*options, error) {
	o := &options{}
	fs := o.flagSet()
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.Config != "" {
		// Defaults < file < command line: the file is read over the parsed
		// options, then the command line is parsed again over the result
		// (the flags point into o, so only explicit flags change it).
		b, err := os.ReadFile(o.Config)
		if err != nil {
			return nil, err
		}
		if err := yaml.UnmarshalStrict(b, o); err != nil {
			return nil, fmt.Errorf("%s: %w", o.Config, err)
		}
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	return o, nil
}

// flagSet defines the flags, each writing into o.
func (o *options) flagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("slurm-vk", flag.ContinueOnError)
	fs.StringVar(&o.Config, "config", "", "YAML file with any of these options (flags win)")
	fs.BoolVar(&o.Check, "check", false, "validate the options, print them as YAML, and exit")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig (empty: in-cluster)")
	fs.StringVar(&o.NodeName, "node-name", "slurm", "name of the virtual node")
	fs.StringVar(&o.Partition, "partition", "", "Slurm partition this node serves (required)")
	fs.StringVar(&o.SlurmrestdURL, "slurmrestd-url", "", "slurmrestd: http://, https:// or unix:/path (required)")
	fs.StringVar(&o.SlurmTokenFile, "slurm-token-file", "", "file with the slurmrestd JWT, re-read when it changes (required)")
	fs.StringVar(&o.SlurmUser, "slurm-user", "", "X-SLURM-USER-NAME (empty: the token's user)")
	fs.StringVar(&o.SlurmAPIVersion, "slurm-api-version", "auto", "slurmrestd API version, or auto")
	fs.StringVar(&o.SlurmCAFile, "slurm-ca-file", "", "CA to verify an https slurmrestd")
	fs.StringVar(&o.FetchURL, "fetch-url", "", "fetch endpoint (slurm-fetchd) URL (required)")
	fs.StringVar(&o.FetchTokenFile, "fetch-token-file", "", "file with the fetch endpoint's bearer token (required)")
	fs.StringVar(&o.FetchCAFile, "fetch-ca-file", "", "CA to verify an https fetch endpoint")
	fs.StringVar(&o.SharedRoot, "shared-root", "", "the fetch endpoint's root as jobs on compute nodes see it (required)")
	fs.StringVar(&o.Runtime, "runtime", "apptainer", "container runtime: podman, charliecloud, apptainer, enroot or none")
	fs.StringVar(&o.HostPathPrefixes, "hostpath-prefixes", "", "comma-separated prefixes hostPath volumes may use")
	for _, f := range []struct {
		dst        *string
		name, what string
	}{
		{&o.AllowedRuntimes, "allowed-runtimes", "container runtimes"},
		{&o.AllowedPartitions, "allowed-partitions", "partitions"},
		{&o.AllowedAccounts, "allowed-accounts", "accounts"},
		{&o.AllowedQOS, "allowed-qos", "QOS"},
		{&o.AllowedReservations, "allowed-reservations", "reservations"},
		{&o.AllowedConstraints, "allowed-constraints", "constraints"},
	} {
		fs.StringVar(f.dst, f.name, "", "comma-separated "+f.what+" the slurm-vk.io/ annotation may choose besides the node's own; * for any (empty: none)")
	}
	fs.StringVar(&o.AllowedOptions, "allowed-options", "nice,exclusive,requeue,mail_type,mail_user,licenses", "comma-separated job fields the slurm-vk.io/options annotation may set")
	fs.StringVar(&o.Listen, "listen", ":10250", "kubelet API (logs) listen address")
	fs.StringVar(&o.NodeIP, "node-ip", "127.0.0.1", "address the API server uses to reach the kubelet API")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "kubelet API serving certificate (empty: self-signed)")
	fs.StringVar(&o.TLSKey, "tls-key", "", "kubelet API serving key")
	fs.StringVar(&o.ClientCA, "client-ca", "", "CA of the API server's client certificate: enables webhook authn/authz on the kubelet API (required unless -insecure-kubelet-api)")
	fs.BoolVar(&o.InsecureKubeletAPI, "insecure-kubelet-api", false, "serve the kubelet API (logs, full pod specs) to anyone who reaches -listen, without -client-ca: for tests only")
	fs.DurationVar(&o.StatusInterval.Duration, "status-interval", 5*time.Second, "pod status sync period")
	fs.DurationVar(&o.RestartBackoff.Duration, "restart-backoff", provider.DefaultRestartBackoff, "first back-off before a container is restarted (restartPolicy OnFailure, Always); doubles per restart")
	fs.DurationVar(&o.MaxRestartBackoff.Duration, "max-restart-backoff", provider.DefaultMaxRestartBackoff, "longest back-off before a restart; reset once a container ran twice as long")
	fs.StringVar(&o.Agent, "agent", "", "slurm-vk-agent as jobs find it (a command in PATH or an absolute path on compute nodes): with -agent-url, jobs start it and kubectl exec works; empty: exec is refused")
	fs.StringVar(&o.AgentCAFile, "agent-ca-file", "", "CA of an https -agent-url, as compute nodes find it (default: their system roots)")
	fs.StringVar(&o.AgentURL, "agent-url", "", "the fetch endpoint as compute nodes reach it, for the exec agent (default: -fetch-url)")
	fs.StringVar(&o.LogTimeHelper, "log-time-helper", provider.DefaultLogTimeHelper, "slurm-vk-logtime as jobs find it (a command in PATH or an absolute path on compute nodes); without it, --timestamps/--since use the log's mtime")
	fs.DurationVar(&o.NodeInterval.Duration, "node-interval", 30*time.Second, "node capacity and readiness refresh period")
	fs.IntVar(&o.MaxPods, "max-pods", 1000, "pods this node accepts")
	// Creating a pod waits on the network (staging, slurmrestd), not the
	// CPU: virtual-kubelet's default of one worker per CPU made a burst of
	// pods queue in the provider (bench/chain.sh).
	fs.IntVar(&o.PodSyncWorkers, "pod-sync-workers", defaultPodSyncWorkers, "pods created, updated and deleted at once")
	fs.Float64Var(&o.KubeAPIQPS, "kube-api-qps", defaultKubeAPIQPS, "requests per second to the API server (pod status updates, mostly); one virtual node holds thousands of pods")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", defaultKubeAPIBurst, "requests to the API server above -kube-api-qps in a burst")
	fs.Float64Var(&o.QueueFactor, "queue-factor", 1, "offer Kubernetes this many times the partition's CPUs, memory and GPUs, so the excess waits in Slurm's queue (>= 1)")
	fs.StringVar(&o.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics and liveness at /healthz on this address (empty: off)")
	fs.StringVar(&o.NodeLabels, "node-labels", "", "extra node labels, key=value,... (as the kubelet's --node-labels)")
	fs.StringVar(&o.NodeTaints, "node-taints", "", "extra node taints, key[=value]:Effect,... (as the kubelet's --register-with-taints)")
	fs.BoolVar(&o.NoProviderTaint, "no-provider-taint", false, "register the node without the provider's NoSchedule taint, so that pods that do not tolerate it land here: for a lab running the upstream e2e suite, never on a shared cluster (every pod could then become a Slurm job)")
	fs.BoolVar(&o.Verbose, "v", false, "debug logging")
	return fs
}

// validate checks the options together, and parses the node's labels and
// taints.
func (o *options) validate() error {
	var missing []string
	for name, v := range map[string]string{"partition": o.Partition, "slurmrestd-url": o.SlurmrestdURL,
		"slurm-token-file": o.SlurmTokenFile, "fetch-url": o.FetchURL, "fetch-token-file": o.FetchTokenFile, "shared-root": o.SharedRoot} {
		if v == "" {
			missing = append(missing, "-"+name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("missing required options: %s", strings.Join(missing, ", "))
	}
	if o.PodSyncWorkers < 0 || o.KubeAPIQPS < 0 || o.KubeAPIBurst < 0 {
		return fmt.Errorf("-pod-sync-workers %d, -kube-api-qps %g, -kube-api-burst %d: none may be negative", o.PodSyncWorkers, o.KubeAPIQPS, o.KubeAPIBurst)
	}
	if o.ClientCA == "" && !o.InsecureKubeletAPI {
		return fmt.Errorf("-client-ca is required: without it the kubelet API (container logs, full pod specs) answers anyone who reaches %s; give -insecure-kubelet-api to serve it so anyway", o.Listen)
	}
	for _, k := range splitList(o.AllowedOptions) {
		if contains(provider.ReservedOptions, k) {
			return fmt.Errorf("-allowed-options %q: slurm-vk sets that job field itself, or a slurm-vk.io/ annotation under its allow-list does; the options annotation may not", k)
		}
	}
	if err := o.Tenancy.Validate(); err != nil {
		return err
	}
	if o.Tenancy.Mode == provider.TenancyMapped && o.SlurmUser != "" {
		return fmt.Errorf("-slurm-user %q and tenancy mode %q exclude each other: each namespace's jobs run as its own user", o.SlurmUser, provider.TenancyMapped)
	}
	if o.QueueFactor < 1 {
		return fmt.Errorf("-queue-factor %v: must be at least 1", o.QueueFactor)
	}
	var err error
	if o.labels, err = parseLabels(o.NodeLabels); err != nil {
		return fmt.Errorf("-node-labels: %w", err)
	}
	if o.taints, err = parseTaints(o.NodeTaints); err != nil {
		return fmt.Errorf("-node-taints: %w", err)
	}
	return nil
}

// parseLabels reads key=value,... with the API server's own rules, so a bad
// label fails at start rather than when the node registers.
func parseLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, kv := range splitList(s) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%q: want key=value", kv)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("label key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("label value %q: %s", v, strings.Join(errs, "; "))
		}
		labels[k] = v
	}
	return labels, nil
}

// parseTaints reads key[=value]:Effect,...
func parseTaints(s string) ([]corev1.Taint, error) {
	var taints []corev1.Taint
	for _, spec := range splitList(s) {
		kv, effect, ok := strings.Cut(spec, ":")
		if !ok {
			return nil, fmt.Errorf("%q: want key[=value]:Effect", spec)
		}
		k, v, _ := strings.Cut(kv, "=")
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("taint key %q: %s", k, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("taint value %q: %s", v, strings.Join(errs, "; "))
		}
		switch e := corev1.TaintEffect(effect); e {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			return nil, fmt.Errorf("%q: effect must be NoSchedule, PreferNoSchedule or NoExecute", spec)
		}
		taints = append(taints, corev1.Taint{Key: k, Value: v, Effect: corev1.TaintEffect(effect)})
	}
	return taints, nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Defaults of the API and worker options; a zero value (options made in
// code, a config file without them) means the default.
const (
	defaultPodSyncWorkers = 10
	defaultKubeAPIQPS     = 100
	defaultKubeAPIBurst   = 200
)

// orDefault is v, or def when v is not positive.
func orDefault[T int | float64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
