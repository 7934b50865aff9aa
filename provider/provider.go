package provider

import (
	"context"
	"io"
	"os"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Files is what the provider needs of the fetch endpoint
// (*fetch/client.Client implements it).
type Files interface {
	// CreatePod makes the pod directory, owned by user ("" in single-user
	// tenancy: the endpoint's configured owner).
	CreatePod(ctx context.Context, pod layout.Pod, user string) error
	DeletePod(ctx context.Context, pod layout.Pod) error
	// Unstage removes the staged files (Secrets...) once the job is over.
	Unstage(ctx context.Context, pod layout.Pod) error
	Stage(ctx context.Context, pod layout.Pod, rel string, data []byte, mode os.FileMode) error
	// UnstageFile removes one staged file (a volume's key that is gone).
	UnstageFile(ctx context.Context, pod layout.Pod, rel string) error
	Info(ctx context.Context, pod layout.Pod, container string, attempt int, tailLines int64) (fetchclient.Info, error)
	// Containers reports each named container's latest attempt and the one
	// before (restarts are counted by the job, in the layout's attempts).
	Containers(ctx context.Context, pod layout.Pod, names []string) (map[string]fetchclient.Container, error)
	Logs(ctx context.Context, pod layout.Pod, container string, opts fetchclient.LogOptions) (io.ReadCloser, error)
}

// Config configures a Provider.
type Config struct {
	TranslateConfig
	// StatusInterval is the sync loop's period (default 5s).
	StatusInterval time.Duration
	// PendingRefresh is how often a pending job's full record is re-read,
	// to show why Slurm still holds it (default 30s); at most
	// PendingRefreshPerCycle such reads happen per cycle (default 20).
	PendingRefresh         time.Duration
	PendingRefreshPerCycle int
	// Now is the clock (default time.Now); tests inject their own.
	Now func() time.Time
	// Events, if set, receives an event for each pod that cannot run and
	// each submitted job.
	Events record.EventRecorder
	// Metrics, if set, counts log streams and pods by phase (give
	// Metrics.ObserveSlurm to slurmclient.Config.Observe for slurmrestd
	// calls).
	Metrics *Metrics
	// Tenancy maps namespaces to Slurm users (default: single user, every
	// namespace).
	Tenancy Tenancy
	// TenantClient makes the client that acts for a mapped tenant: submit,
	// signal and cancel of its jobs. Nil: the node's client for all.
	TenantClient func(Tenant) (slurmclient.Interface, error)
	// NodeSizes, if set, are the partition's nodes (NodeProvider.NodeSizes):
	// a pod that fits none fails before it is submitted.
	NodeSizes func() []NodeSize
	// NodeAddress, if set, is the IP address of a node of the partition
	// (NodeProvider.NodeAddress): a running pod's host and pod IP.
	NodeAddress func(node string) string
	// Allocatable, if set, is what the node offers pods now
	// (NodeProvider.Allocatable), for TranslateConfig.Allocatable.
	Allocatable func() corev1.ResourceList
	// Tunnel, with TranslateConfig's Agent and AgentURL, serves kubectl
	// exec; nil: exec is refused.
	Tunnel Tunnel
}

// Provider runs pods as Slurm jobs. One Provider serves one virtual node,
// that is one Slurm partition.
type Provider struct {
	cfg    Config
	slurm  slurmclient.Interface
	files  Files
	look   Lookups
	tunnel Tunnel

	mu     sync.Mutex
	pods   map[types.UID]*podState
	byName map[string]types.UID // namespace/name -> UID
	// adopt holds jobs found in Slurm at start-up, by their comment (node,
	// namespace, name and UID: a job that names another pod's UID under
	// its own namespace is no match), until their pods are created again.
	adopt map[string]slurmclient.JobID
	// uncertain marks pods whose submit outcome is unknown: look the job
	// up before submitting again.
	uncertain map[types.UID]bool
	// recovered says Recover listed Slurm's jobs; until it has, a pod that
	// was running before is looked up by its comment before any submit.
	recovered bool
	// cancels holds the jobs of deleted pods still in their grace period,
	// with when to cancel them: state of the sync loop, on the configured
	// clock (a timer would die with the process).
	cancels map[slurmclient.JobID]graceCancel
	// clients acts for mapped tenants, by user, made on first use.
	clients map[string]slurmclient.Interface
	// gone holds the UIDs of pods deleted, with when: a create still under
	// way for one of them must not bring it back. Forgotten after goneFor.
	gone map[types.UID]time.Time
	// creating holds the pods a create is under way for; retrying counts
	// the creates the sync loop started again, at most cap(retrySlots).
	creating   map[types.UID]bool
	retrying   sync.WaitGroup
	retrySlots chan struct{}
	notify     func(*corev1.Pod)
	started    bool
}

// podState is one pod as the provider tracks it.
type podState struct {
	pod    *corev1.Pod // with the latest status
	job    slurmclient.JobID
	state  slurmclient.JobState // last state seen; "" before the first
	flags  int                  // len(flags) last seen, to notice COMPLETING and the like
	reason string               // pending reason last seen
	// record is the job's full record last read, and seen its containers'
	// attempts then, to tell when a running pod's containers change.
	record    *slurmclient.Job
	seen      string
	attempts  map[string]fetchclient.Container // as last read, for when a read fails
	polled    time.Time                        // when refreshRunning last looked
	checked   time.Time                        // when the full record was last read
	final     bool                             // terminal status recorded
	ran       bool                             // ran under a job Slurm has forgotten (no job ID)
	deadlined bool                             // cancelled past its activeDeadlineSeconds
	// volumes are the digests of the volume files staged last, by path
	// (nil after a restart: all are staged again), volumesAt when they
	// were last compared with their sources (refreshVolumes).
	volumes   map[string]digest
	volumesAt time.Time
	done      chan struct{} // closed when the pod's containers have ended
	// A pod not created yet: the pod as CreatePod got it, when to try
	// again, and the back-off.
	orig    *corev1.Pod
	retryAt time.Time
	backoff time.Duration
}

var (
	_ nodeutil.Provider = (*Provider)(nil)
	_ node.PodNotifier  = (*Provider)(nil)
	_ Files             = (*fetchclient.Client)(nil)
)

// New builds a Provider. Call Recover before the pod controller starts.
func New(cfg Config, slurm slurmclient.Interface, files Files, look Lookups) *Provider {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PendingRefresh <= 0 {
		cfg.PendingRefresh = 30 * time.Second
	}
	if cfg.PendingRefreshPerCycle <= 0 {
		cfg.PendingRefreshPerCycle = 20
	}
	p := &Provider{cfg: cfg, slurm: slurm, files: files, look: look, tunnel: cfg.Tunnel,
		pods: map[types.UID]*podState{}, byName: map[string]types.UID{},
		adopt: map[string]slurmclient.JobID{}, uncertain: map[types.UID]bool{}, cancels: map[slurmclient.JobID]graceCancel{},
		clients: map[string]slurmclient.Interface{}, gone: map[types.UID]time.Time{}, creating: map[types.UID]bool{},
		retrySlots: make(chan struct{}, 4)}
	if cfg.Metrics != nil {
		// One provider per registry: a second one's pods are not counted.
		cfg.Metrics.reg.Register(newPhaseCollector(p))
	}
	return p
}

func key(namespace, name string) string { return namespace + "/" + name }

func (p *Provider) event(pod *corev1.Pod, typ, reason, msg string) {
	if p.cfg.Events != nil {
		p.cfg.Events.Event(pod, typ, reason, msg)
	}
}

// UpdatePod implements node.PodLifecycleHandler. A running job cannot
// change; only the pod's metadata is kept.
func (p *Provider) UpdatePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, ok := p.pods[pod.UID]; ok {
		status := st.pod.Status
		st.pod = pod.DeepCopy()
		st.pod.Status = status
	}
	return nil
}

func (p *Provider) get(namespace, name string) (*podState, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, ok := p.pods[p.byName[key(namespace, name)]]
	if !ok {
		return nil, errdefs.NotFoundf("pod %s is not known to the Slurm provider", key(namespace, name))
	}
	return st, nil
}

// GetPod implements node.PodLifecycleHandler.
func (p *Provider) GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error) {
	st, err := p.get(namespace, name)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return st.pod.DeepCopy(), nil
}

// GetPodStatus implements node.PodLifecycleHandler.
func (p *Provider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

// GetPods implements node.PodLifecycleHandler.
func (p *Provider) GetPods(ctx context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, st := range p.pods {
		out = append(out, st.pod.DeepCopy())
	}
	return out, nil
}

// NotifyPods implements node.PodNotifier and starts the sync loop.
func (p *Provider) NotifyPods(ctx context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	start := !p.started
	p.started = true
	p.mu.Unlock()
	if start {
		go p.Run(ctx)
	}
}

// GetStatsSummary implements nodeutil.Provider: Slurm does not report
// per-container usage through slurmrestd, so the summary names the node only.
func (p *Provider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.cfg.NodeName}}, nil
}

// GetMetricsResource implements nodeutil.Provider.
func (p *Provider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, nil
}
