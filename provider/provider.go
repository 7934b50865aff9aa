package provider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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
	// Metrics, if set, counts log streams (wrap the slurmclient with
	// Metrics.Instrument for slurmrestd calls).
	Metrics *Metrics
	// Tenancy maps namespaces to Slurm users (default: single user, every
	// namespace).
	Tenancy Tenancy
	// TenantClient makes the client that acts for a mapped tenant: submit,
	// signal and cancel of its jobs. Nil: the node's client for all.
	TenantClient func(Tenant) (slurmclient.Interface, error)
}

// Provider runs pods as Slurm jobs. One Provider serves one virtual node,
// that is one Slurm partition.
type Provider struct {
	cfg   Config
	slurm slurmclient.Interface
	files Files
	look  Lookups

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

// graceCancel is a deleted pod's job to cancel at a time, and then its
// directory to remove: the job may write its output until then.
type graceCancel struct {
	at        time.Time
	namespace string // whose tenant cancels it
	dir       layout.Pod
	cancelled bool // cancelled; the directory is still to go
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
	record   *slurmclient.Job
	seen     string
	attempts map[string]fetchclient.Container // as last read, for when a read fails
	polled   time.Time                        // when refreshRunning last looked
	checked  time.Time                        // when the full record was last read
	final    bool                             // terminal status recorded
	ran      bool                             // ran under a job Slurm has forgotten (no job ID)
	done     chan struct{}                    // closed when the pod's containers have ended
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
	p := &Provider{cfg: cfg, slurm: slurm, files: files, look: look,
		pods: map[types.UID]*podState{}, byName: map[string]types.UID{},
		adopt: map[string]slurmclient.JobID{}, uncertain: map[types.UID]bool{}, cancels: map[slurmclient.JobID]graceCancel{},
		clients: map[string]slurmclient.Interface{}, gone: map[types.UID]time.Time{}, creating: map[types.UID]bool{},
		retrySlots: make(chan struct{}, 4)}
	if cfg.Metrics != nil {
		cfg.Metrics.provider.Store(p)
	}
	return p
}

func key(namespace, name string) string { return namespace + "/" + name }

// Recover finds this node's jobs in Slurm, so that pods created again after
// a restart are re-attached to their jobs instead of submitted twice, and
// cancels jobs whose pods no longer exist (alive says which UIDs do).
func (p *Provider) Recover(ctx context.Context, alive func(uid string) bool) error {
	jobs, err := p.slurm.Jobs(ctx, slurmclient.JobFilter{})
	if err != nil {
		return fmt.Errorf("list Slurm jobs for recovery: %w", err)
	}
	for _, j := range ownJobs(ctx, p.cfg.NodeName, p.cfg.Tenancy, jobs) {
		ns, name, uid, _ := ParseJobComment(p.cfg.NodeName, j.Comment)
		if alive(uid) {
			p.mu.Lock()
			p.adopt[j.Comment] = j.ID
			p.mu.Unlock()
			continue
		}
		if !j.State.Terminal() {
			log.G(ctx).WithField("job", j.ID).WithField("pod", ns+"/"+name).Info("cancelling the job of a pod that is gone")
			if err := p.cancelAs(ctx, ns, j.ID); err != nil {
				log.G(ctx).WithError(err).WithField("job", j.ID).Warn("cancel orphaned job")
			}
		}
		// The pod is gone, so is its directory (its Secrets): a delete the
		// provider did not live to finish, or one it never saw.
		if ref := (layout.Pod{Namespace: ns, Name: name, UID: uid}); ref.Validate() == nil {
			if err := p.files.DeletePod(ctx, ref); err != nil {
				log.G(ctx).WithError(err).WithField("pod", ns+"/"+name).Warn("remove the directory of a pod that is gone")
			}
		}
	}
	p.mu.Lock()
	p.recovered = true
	p.mu.Unlock()
	return nil
}

// CreatePod implements node.PodLifecycleHandler: translate, stage the
// files, submit. A pod that cannot run fails with a reason; nothing is
// submitted for it. A pod that cannot be created yet (a ConfigMap not
// there, the fetch endpoint or slurmrestd down) waits with a reason, and
// the sync loop tries again with back-off: CreatePod returns no error for
// it, as virtual-kubelet fails a pod whose create failed (restartPolicy
// Never) and does not call CreatePod again for a pod the provider knows.
func (p *Provider) CreatePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	if p.isGone(pod.UID) {
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	if err := p.create(ctx, pod); err != nil {
		p.retryLater(ctx, pod, err)
	}
	return nil
}

// create is one attempt at CreatePod; an error is transient. One create
// at a time per pod: a retry of the sync loop and virtual-kubelet's call
// could otherwise both submit.
func (p *Provider) create(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	if p.creating[pod.UID] {
		p.mu.Unlock()
		return nil
	}
	p.creating[pod.UID] = true
	defer func() {
		p.mu.Lock()
		delete(p.creating, pod.UID)
		p.mu.Unlock()
	}()
	if st, ok := p.pods[pod.UID]; ok && (st.job != 0 || st.final) {
		p.mu.Unlock()
		return nil
	}
	if old := p.displace(pod); old != nil {
		p.mu.Unlock()
		if old.job != 0 && !old.final {
			log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("job", old.job).Info("cancelling the job of an earlier pod of the same name")
			if err := p.cancelAs(ctx, pod.Namespace, old.job); err != nil {
				return fmt.Errorf("cancel job %d of the earlier pod %s: %w", old.job, key(pod.Namespace, pod.Name), err)
			}
		}
		// Its directory (its Secrets) goes with it.
		if err := p.files.DeletePod(ctx, PodRef(old.pod)); err != nil {
			return fmt.Errorf("remove the directory of the earlier pod %s: %w", key(pod.Namespace, pod.Name), err)
		}
		p.mu.Lock()
	}
	adopted, isAdopted := p.adopt[JobComment(p.cfg.NodeName, pod)]
	// A pod this node reported on before (it has a start time) may have a
	// job already: one Slurm still knows, or one it has forgotten.
	seenBefore := pod.Status.StartTime != nil
	uncertain := p.uncertain[pod.UID] || (seenBefore && !p.recovered)
	p.mu.Unlock()

	logger := log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name))
	if isAdopted {
		logger.WithField("job", adopted).Info("re-attached to its Slurm job")
		p.track(pod, adopted)
		return nil
	}
	if seenBefore || uncertain {
		if done, err := p.ranBefore(ctx, pod); err != nil {
			return err
		} else if done {
			return nil
		}
	}
	tenant, err := p.cfg.Tenancy.For(pod.Namespace)
	var bad *InvalidPodError
	if errors.As(err, &bad) {
		logger.WithField("reason", bad.Reason).Warn(bad.Message)
		p.fail(pod, bad.Reason, bad.Message)
		return nil
	}
	slurm, err := p.slurmAs(pod.Namespace)
	if err != nil {
		return err // the tenant's client cannot be made; nothing is written yet
	}
	plan, err := Translate(pod, p.cfg.TranslateConfig, p.look)
	if errors.As(err, &bad) && missingReference[bad.Reason] {
		// Like the kubelet: the object may just not have arrived yet (or be
		// created later). Wait, and let the controller retry.
		p.waiting(pod, "CreateContainerConfigError", bad.Message)
		return fmt.Errorf("%s", bad.Message)
	}
	if errors.As(err, &bad) {
		logger.WithField("reason", bad.Reason).Warn(bad.Message)
		p.fail(pod, bad.Reason, bad.Message)
		return nil
	}
	if err != nil {
		return err
	}
	ref := PodRef(pod)
	if plan.Spec.Account == "" {
		plan.Spec.Account = tenant.Account
	}
	// Tracked before anything is written or submitted: a delete, however
	// this ends, finds the pod and undoes it.
	p.mu.Lock()
	if p.pods[pod.UID] == nil {
		p.pods[pod.UID] = &podState{pod: pod.DeepCopy(), done: make(chan struct{})}
		p.byName[key(pod.Namespace, pod.Name)] = pod.UID
	}
	p.mu.Unlock()
	// The fetch endpoint down or its file system full is transient: the
	// pod waits, with the reason, and virtual-kubelet retries.
	// Each step is bounded: the sync loop tries again with back-off, so a
	// fetch endpoint that is down holds a create for seconds, not minutes.
	fctx, cancel := context.WithTimeout(ctx, createStepTimeout)
	defer cancel()
	if err := p.files.CreatePod(fctx, ref, tenant.User); err != nil {
		msg := fmt.Sprintf("cannot create the pod's directory through the fetch endpoint: %v", err)
		p.waiting(pod, ReasonFetchUnavailable, msg)
		return errors.New(msg)
	}
	for _, f := range plan.Staged {
		if err := p.files.Stage(fctx, ref, f.Path, f.Data, os.FileMode(f.Mode)); err != nil {
			msg := fmt.Sprintf("cannot stage %s through the fetch endpoint: %v", f.Path, err)
			p.waiting(pod, ReasonStagingFailed, msg)
			return errors.New(msg)
		}
	}
	if uncertain {
		if id, found, err := p.findJob(ctx, plan.Spec.Comment); err != nil {
			return err
		} else if found {
			p.track(pod, id)
			return nil
		}
	}
	id, err := slurm.Submit(ctx, plan.Spec)
	switch {
	case err == nil:
	case errors.Is(err, slurmclient.ErrRejected), errors.Is(err, slurmclient.ErrForbidden):
		msg := err.Error()
		var se *slurmclient.Error
		if errors.As(err, &se) && se.Message() != "" {
			msg = "Slurm refused the job: " + se.Message()
		}
		logger.Warn(msg)
		p.fail(pod, ReasonRejected, msg)
		if err := p.files.Unstage(ctx, ref); err != nil {
			logger.WithError(err).Warn("remove the staged files of a job Slurm refused; they go when the pod is deleted")
		}
		return nil
	default:
		p.mu.Lock()
		p.uncertain[pod.UID] = true
		p.mu.Unlock()
		return fmt.Errorf("submit job: %w", err)
	}
	logger.WithField("job", id).Info("submitted")
	p.event(pod, corev1.EventTypeNormal, ReasonSubmitted, fmt.Sprintf("Slurm job %d submitted to partition %s", id, plan.Spec.Partition))
	p.track(pod, id)
	return nil
}

// terminate ends a deleted pod's job: a job that may run gets SIGTERM and
// a cancel at the end of the grace period (the pod's deletion time, where
// the API server set it), which the sync loop carries out; a pending job,
// or one whose grace period is over, is cancelled now.
func (p *Provider) terminate(ctx context.Context, pod *corev1.Pod, id slurmclient.JobID, state slurmclient.JobState) (graced bool, err error) {
	now := p.cfg.Now()
	grace := int64(30)
	if pod.DeletionGracePeriodSeconds != nil {
		grace = *pod.DeletionGracePeriodSeconds
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = *pod.Spec.TerminationGracePeriodSeconds
	}
	deadline := now.Add(time.Duration(grace) * time.Second)
	if pod.DeletionTimestamp != nil && pod.DeletionTimestamp.Time.Before(deadline) {
		deadline = pod.DeletionTimestamp.Time
	}
	if state == "" { // not seen yet, or re-found after a restart
		slurm, err := p.slurmAs(pod.Namespace)
		if err != nil {
			return false, err
		}
		j, err := slurm.Job(ctx, id)
		switch {
		case errors.Is(err, slurmclient.ErrNotFound):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("look up job %d: %w", id, err)
		case j.State.Terminal():
			return false, nil
		}
		state = j.State
	}
	if state == slurmclient.StatePending || !deadline.After(now) {
		if err := p.cancelAs(ctx, pod.Namespace, id); err != nil {
			return false, fmt.Errorf("cancel job %d: %w", id, err)
		}
		return false, nil
	}
	slurm, err := p.slurmAs(pod.Namespace)
	if err != nil {
		return false, err
	}
	if err := slurm.Signal(ctx, id, syscall.SIGTERM); err != nil && !errors.Is(err, slurmclient.ErrNotFound) && !errors.Is(err, slurmclient.ErrRejected) {
		return false, fmt.Errorf("signal job %d: %w", id, err)
	}
	p.mu.Lock()
	p.cancels[id] = graceCancel{at: deadline, namespace: pod.Namespace, dir: PodRef(pod)}
	p.mu.Unlock()
	return true, nil
}

// cancelDue cancels the jobs whose grace period is over; a cancel that
// fails is tried again next cycle.
func (p *Provider) cancelDue(ctx context.Context) {
	now := p.cfg.Now()
	p.mu.Lock()
	due := map[slurmclient.JobID]graceCancel{}
	for id, c := range p.cancels {
		if !c.at.After(now) {
			due[id] = c
		}
	}
	p.mu.Unlock()
	for id, c := range due {
		logger := log.G(ctx).WithField("job", id)
		if !c.cancelled {
			if err := p.cancelAs(ctx, c.namespace, id); err != nil {
				logger.WithError(err).Warn("cancel after the grace period; trying again next cycle")
				continue
			}
			logger.Info("job cancelled: the deleted pod's grace period is over")
			c.cancelled = true
			p.mu.Lock()
			p.cancels[id] = c
			p.mu.Unlock()
		}
		if c.dir.UID != "" {
			if err := p.files.DeletePod(ctx, c.dir); err != nil {
				logger.WithError(err).Warn("remove the deleted pod's directory; trying again next cycle")
				continue
			}
		}
		p.mu.Lock()
		delete(p.cancels, id)
		p.mu.Unlock()
	}
}

// displace forgets an earlier pod of pod's namespace/name with another
// UID: names are unique, so that pod is gone from the API server, though
// virtual-kubelet may never have called DeletePod for it (it force-deletes
// pods that never ran). Its state is returned for the caller to cancel its
// job (if it may still run) and remove its directory. Called with p.mu
// held.
func (p *Provider) displace(pod *corev1.Pod) *podState {
	old, ok := p.byName[key(pod.Namespace, pod.Name)]
	if !ok || old == pod.UID {
		return nil
	}
	st := p.pods[old]
	delete(p.pods, old)
	delete(p.byName, key(pod.Namespace, pod.Name))
	if st != nil && !st.final {
		close(st.done)
	}
	return st
}

func (p *Provider) findJob(ctx context.Context, comment string) (slurmclient.JobID, bool, error) {
	jobs, err := p.slurm.Jobs(ctx, slurmclient.JobFilter{})
	if err != nil {
		return 0, false, fmt.Errorf("look for an earlier submit: %w", err)
	}
	for _, j := range ownJobs(ctx, p.cfg.NodeName, p.cfg.Tenancy, jobs) {
		if j.Comment == comment {
			return j.ID, true, nil
		}
	}
	return 0, false, nil
}

// track starts following a pod's job; its first status is "submitted".
// A pod deleted while its create was under way is not tracked: its job is
// cancelled and its directory removed instead.
func (p *Provider) track(pod *corev1.Pod, id slurmclient.JobID) {
	p.mu.Lock()
	gone := p.isGone(pod.UID)
	p.mu.Unlock()
	if gone {
		ctx := context.Background()
		log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("job", id).Info("the pod was deleted while its job was submitted: cancelling it")
		if err := p.cancelAs(ctx, pod.Namespace, id); err != nil {
			log.G(ctx).WithError(err).WithField("job", id).Warn("cancel the job of a deleted pod")
		}
		p.files.DeletePod(ctx, PodRef(pod))
		return
	}
	pod = pod.DeepCopy()
	now := p.cfg.Now()
	pod.Status = podStatus(pod, observation{job: &slurmclient.Job{ID: id, State: slurmclient.StatePending, SubmitTime: now}}, now)
	st := &podState{pod: pod, job: id, done: make(chan struct{})}
	p.mu.Lock()
	p.pods[pod.UID] = st
	p.byName[key(pod.Namespace, pod.Name)] = pod.UID
	delete(p.uncertain, pod.UID)
	delete(p.adopt, JobComment(p.cfg.NodeName, pod))
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(pod.DeepCopy())
	}
}

func (p *Provider) event(pod *corev1.Pod, typ, reason, msg string) {
	if p.cfg.Events != nil {
		p.cfg.Events.Event(pod, typ, reason, msg)
	}
}

// missingReference are translation failures that a later attempt may not
// have: a ConfigMap or Secret (or key) that does not exist yet.
var missingReference = map[string]bool{
	"ConfigMapNotFound": true, "SecretNotFound": true, "ConfigMapKeyNotFound": true, "SecretKeyNotFound": true, "KeyNotFound": true,
}

// waiting records a pod that cannot start yet, without a job.
func (p *Provider) waiting(pod *corev1.Pod, reason, msg string) {
	pod = pod.DeepCopy()
	now := p.cfg.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodPending, Reason: reason, Message: msg, StartTime: ptrTime(metav1.NewTime(now))}
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}})
	}
	pod.Status.Conditions = conditions(corev1.PodPending, false, true, now, reason, msg)
	p.mu.Lock()
	first := p.pods[pod.UID] == nil
	p.pods[pod.UID] = &podState{pod: pod, done: make(chan struct{})}
	p.byName[key(pod.Namespace, pod.Name)] = pod.UID
	cb := p.notify
	p.mu.Unlock()
	if first {
		p.event(pod, corev1.EventTypeWarning, reason, msg)
	}
	if cb != nil {
		cb(pod.DeepCopy())
	}
}

// fail records a pod that will never run.
func (p *Provider) fail(pod *corev1.Pod, reason, msg string) {
	p.event(pod, corev1.EventTypeWarning, reason, msg)
	pod = pod.DeepCopy()
	pod.Status = failedStatus(pod, reason, msg, p.cfg.Now())
	done := make(chan struct{})
	close(done)
	p.mu.Lock()
	p.pods[pod.UID] = &podState{pod: pod, final: true, done: done}
	p.byName[key(pod.Namespace, pod.Name)] = pod.UID
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(pod.DeepCopy())
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

// DeletePod implements node.PodLifecycleHandler: the job gets SIGTERM, and
// is cancelled (SIGKILL after Slurm's KillWait) once the pod's grace period
// has passed, by the sync loop; a pending job is cancelled at once.
// Idempotent. After a restart, a pod deleted during its grace period is
// not tracked, but its job was found by Recover: the cancel is derived
// again from the pod's deletion time.
func (p *Provider) DeletePod(ctx context.Context, pod *corev1.Pod) error {
	p.mu.Lock()
	p.gone[pod.UID] = p.cfg.Now()
	st, ok := p.pods[pod.UID]
	adopted, isAdopted := p.adopt[JobComment(p.cfg.NodeName, pod)]
	cb := p.notify
	p.mu.Unlock()
	if !ok && isAdopted {
		graced, err := p.terminate(ctx, pod, adopted, "")
		if err != nil {
			return err
		}
		if !graced {
			if err := p.files.DeletePod(ctx, PodRef(pod)); err != nil {
				return fmt.Errorf("remove the pod directory: %w", err)
			}
		}
		p.mu.Lock()
		delete(p.adopt, JobComment(p.cfg.NodeName, pod))
		p.mu.Unlock()
		return nil
	}
	if !ok {
		return errdefs.NotFoundf("pod %s is not known to the Slurm provider", key(pod.Namespace, pod.Name))
	}
	job := st.job
	p.mu.Lock()
	uncertain := p.uncertain[pod.UID]
	p.mu.Unlock()
	if job == 0 && !st.final && uncertain {
		// A submit whose answer was lost may have made a job after all.
		id, found, err := p.findJob(ctx, JobComment(p.cfg.NodeName, pod))
		if err != nil {
			return err
		}
		if found {
			job = id
		}
	}
	logger := log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("job", job)
	graced := false
	if job != 0 && !st.final {
		var err error
		if graced, err = p.terminate(ctx, pod, job, st.state); err != nil {
			return err
		}
		logger.Info("job cancelled for the deleted pod")
	}
	// A job still in its grace period keeps its directory until it is
	// cancelled (cancelDue); otherwise the directory goes now, or the
	// delete fails and is retried: staged Secrets must not stay behind.
	if !graced {
		if err := p.files.DeletePod(ctx, PodRef(pod)); err != nil {
			return fmt.Errorf("remove the pod directory: %w", err)
		}
	}
	p.mu.Lock()
	final := st.pod.DeepCopy()
	if !st.final {
		now := p.cfg.Now()
		msg := fmt.Sprintf("the pod was deleted; Slurm job %d cancelled", job)
		if job == 0 {
			msg = "the pod was deleted before a Slurm job was submitted for it"
		}
		final.Status = failedStatus(final, ReasonDeleted, msg, now)
		final.Status.Phase = corev1.PodFailed
	}
	delete(p.uncertain, pod.UID)
	delete(p.pods, pod.UID)
	if p.byName[key(pod.Namespace, pod.Name)] == pod.UID {
		delete(p.byName, key(pod.Namespace, pod.Name))
	}
	if !st.final {
		close(st.done)
	}
	p.mu.Unlock()
	if cb != nil {
		cb(final)
	}
	return nil
}

// endedBefore is a pod of this node that had ended before this process
// started: virtual-kubelet does not hand such pods to CreatePod, but their
// output is still there, and a kubelet serves it until the pod is deleted.
func (p *Provider) endedBefore(namespace, name string) *podState {
	if p.look.Pod == nil {
		return nil
	}
	pod, err := p.look.Pod(namespace, name)
	if err != nil || pod.Spec.NodeName != p.cfg.NodeName || (pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed) {
		return nil
	}
	done := make(chan struct{})
	close(done)
	return &podState{pod: pod, final: true, ran: true, done: done}
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

// Run syncs pod statuses from Slurm every StatusInterval until ctx ends.
func (p *Provider) Run(ctx context.Context) {
	t := time.NewTicker(p.cfg.StatusInterval)
	defer t.Stop()
	defer p.retrying.Wait()
	for {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			log.G(ctx).WithError(err).Warn("status sync: keeping the last known pod statuses")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync is one status cycle: one JobStates request for every job not yet
// final, then a full Job request for each job whose state changed. If
// slurmrestd cannot answer, nothing changes: no pod is failed for it.
func (p *Provider) Sync(ctx context.Context) error {
	p.cancelDue(ctx)
	p.retryDue(ctx)
	p.mu.Lock()
	var ids []slurmclient.JobID
	tracked := map[slurmclient.JobID]*podState{}
	for _, st := range p.pods {
		if st.job != 0 && !st.final {
			ids = append(ids, st.job)
			tracked[st.job] = st
		}
	}
	p.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	states, err := p.slurm.JobStates(ctx, ids)
	if err != nil {
		return err
	}
	seen := map[slurmclient.JobID]bool{}
	var stale []*podState   // pending, unchanged: candidates for a reason refresh
	var running []*podState // running, unchanged: their containers may have changed
	for _, s := range states {
		seen[s.ID] = true
		st := tracked[s.ID]
		if st == nil {
			continue
		}
		p.mu.Lock()
		changed := s.State != st.state || len(s.StateFlags) != st.flags
		p.mu.Unlock()
		switch {
		case changed:
			if err := p.refresh(ctx, st, len(s.StateFlags)); err != nil {
				return err
			}
		case s.State == slurmclient.StatePending:
			stale = append(stale, st)
		case s.State == slurmclient.StateRunning:
			running = append(running, st)
		}
	}
	for id, st := range tracked {
		if !seen[id] {
			// Not in the answer: slurmctld forgot it. Confirm before
			// declaring it lost.
			if err := p.refresh(ctx, st, 0); err != nil {
				return err
			}
		}
	}
	p.refreshRunning(ctx, running)
	return p.refreshPending(ctx, stale)
}

// refreshPending re-reads a few pending jobs so their pods show why Slurm
// still holds them: first those whose reason is not known yet, then the
// least recently read, each at most every PendingRefresh.
func (p *Provider) refreshPending(ctx context.Context, stale []*podState) error {
	now := p.cfg.Now()
	p.mu.Lock()
	due := stale[:0]
	for _, st := range stale {
		if st.reason == "" || st.reason == "None" || now.Sub(st.checked) >= p.cfg.PendingRefresh {
			due = append(due, st)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		ui, uj := due[i].reason == "" || due[i].reason == "None", due[j].reason == "" || due[j].reason == "None"
		if ui != uj {
			return ui
		}
		return due[i].checked.Before(due[j].checked)
	})
	if len(due) > p.cfg.PendingRefreshPerCycle {
		due = due[:p.cfg.PendingRefreshPerCycle]
	}
	flags := make([]int, len(due))
	for i, st := range due {
		flags[i] = st.flags
	}
	p.mu.Unlock()
	for i, st := range due {
		if err := p.refresh(ctx, st, flags[i]); err != nil {
			return err
		}
	}
	return nil
}

// refresh fetches a job's full record (and, once it has ended or runs,
// its containers' exit markers) and publishes the pod's new status.
func (p *Provider) refresh(ctx context.Context, st *podState, flags int) error {
	p.mu.Lock()
	pod := st.pod.DeepCopy()
	p.mu.Unlock()
	now := p.cfg.Now()
	job, err := p.slurm.Job(ctx, st.job)
	var status corev1.PodStatus
	final := false
	seen := ""
	var containers map[string]fetchclient.Container
	switch {
	case errors.Is(err, slurmclient.ErrNotFound):
		status = failedStatus(pod, ReasonLost, fmt.Sprintf("Slurm job %d disappeared before its final state was seen", st.job), now)
		final = true
	case err != nil:
		return err
	default:
		if job.State != slurmclient.StatePending {
			containers, err = p.files.Containers(ctx, PodRef(pod), containerNames(pod))
			if err != nil {
				if job.State.Terminal() {
					log.G(ctx).WithError(err).WithField("pod", key(pod.Namespace, pod.Name)).Warn("read exit markers; using the job's exit code")
				}
				// What was seen last stands (no restartCount back to 0).
				p.mu.Lock()
				containers = st.attempts
				p.mu.Unlock()
			}
		}
		o := observe(job, containers)
		seen = fingerprint(containers)
		status = podStatus(pod, o, now)
		final = job.State.Terminal()
	}
	p.mu.Lock()
	if cur, ok := p.pods[pod.UID]; !ok || cur != st {
		p.mu.Unlock()
		return nil // deleted meanwhile
	}
	if job != nil && job.State == slurmclient.StatePending && job.StateReason != st.reason && job.StateReason != "" && job.StateReason != "None" {
		defer p.event(pod, corev1.EventTypeNormal, ReasonPending, pendingMessage(job))
	}
	st.pod.Status = status
	if job != nil {
		st.state, st.reason = job.State, job.StateReason
		st.record, st.seen = job, seen
		if containers != nil {
			st.attempts = containers
		}
	}
	st.checked = now
	st.flags = flags
	ended := final && !st.final
	if ended {
		st.final = true
		close(st.done)
	}
	out := st.pod.DeepCopy()
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(out)
	}
	if ended {
		// The job is over: its Secrets need not wait for the pod's delete.
		if err := p.files.Unstage(ctx, PodRef(out)); err != nil {
			log.G(ctx).WithError(err).WithField("pod", key(out.Namespace, out.Name)).Warn("remove the staged files of an ended job; they go when the pod is deleted")
		}
	}
	return nil
}

// GetContainerLogs implements nodeutil.Provider through the fetch
// endpoint. A follow stream ends when the container's exit marker says so,
// or when the job is known to have ended.
func (p *Provider) GetContainerLogs(ctx context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	st, err := p.get(namespace, podName)
	if err != nil {
		if st = p.endedBefore(namespace, podName); st == nil {
			return nil, err
		}
	}
	p.mu.Lock()
	pod := st.pod.DeepCopy()
	p.mu.Unlock()
	found := false
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		found = found || c.Name == containerName
	}
	if !found {
		return nil, errdefs.NotFoundf("container %q is not in pod %s", containerName, key(namespace, podName))
	}
	if st.job == 0 && !st.ran {
		return nil, errdefs.InvalidInput(fmt.Sprintf("pod %s never ran: %s", key(namespace, podName), pod.Status.Message))
	}
	attempt, err := p.logAttempt(ctx, pod, containerName, opts.Previous, isDone(st.done))
	if err != nil {
		return nil, logsError(err, containerName, key(namespace, podName))
	}
	tail := int64(-1)
	if opts.Tail > 0 || TailZero(ctx) { // virtual-kubelet's Tail cannot tell 0 from unset
		tail = int64(opts.Tail)
	}
	since := opts.SinceTime
	if opts.SinceSeconds > 0 {
		since = p.cfg.Now().Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	// A previous attempt is over: following it ends at its end.
	terminated := st.done
	if opts.Previous {
		terminated = closed
	}
	rc, err := p.files.Logs(ctx, PodRef(pod), containerName, fetchclient.LogOptions{
		Attempt: attempt, TailLines: tail, LimitBytes: int64(opts.LimitBytes), Follow: opts.Follow,
		Timestamps: opts.Timestamps, Since: since, Terminated: terminated,
	})
	if err != nil {
		return nil, logsError(err, containerName, key(namespace, podName))
	}
	if m := p.cfg.Metrics; m != nil {
		m.logStreams.Inc()
		rc = &countedStream{ReadCloser: rc, g: m.logStreams}
	}
	return rc, nil
}

// logsError classifies a failed logs request for virtual-kubelet's HTTP
// answer: what the fetch endpoint says does not exist is 404, what it
// refuses (a job that put something other than its output in its place,
// a node token that may not reach the pod) 400 with its reason; only
// server and transport faults stay 500s.
func logsError(err error, container, pod string) error {
	switch {
	case errdefs.IsInvalidInput(err) || errdefs.IsNotFound(err):
		return err
	case errors.Is(err, fetchclient.ErrNotFound):
		return errdefs.NotFoundf("no output for container %q of pod %s yet", container, pod)
	case errors.Is(err, fetchclient.ErrForbidden), errors.Is(err, fetchclient.ErrRejected):
		return errdefs.AsInvalidInput(fmt.Errorf("logs of container %q of pod %s: %w", container, pod, err))
	}
	return err
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// closed is a channel that is closed.
var closed = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

type tailZeroKey struct{}

// WithTailZero marks a logs request that asked for tailLines=0, which
// virtual-kubelet's options cannot tell from no tail at all: the kubelet
// answers it with nothing, and so does GetContainerLogs.
func WithTailZero(ctx context.Context) context.Context {
	return context.WithValue(ctx, tailZeroKey{}, true)
}

// TailZero reports WithTailZero.
func TailZero(ctx context.Context) bool { v, _ := ctx.Value(tailZeroKey{}).(bool); return v }

var errUnsupported = "is not supported by the Slurm provider: containers run as Slurm batch jobs"

// RunInContainer implements nodeutil.Provider.
func (p *Provider) RunInContainer(ctx context.Context, namespace, podName, containerName string, cmd []string, attach api.AttachIO) error {
	return errdefs.InvalidInput("exec " + errUnsupported)
}

// AttachToContainer implements nodeutil.Provider.
func (p *Provider) AttachToContainer(ctx context.Context, namespace, podName, containerName string, attach api.AttachIO) error {
	return errdefs.InvalidInput("attach " + errUnsupported)
}

// PortForward implements nodeutil.Provider.
func (p *Provider) PortForward(ctx context.Context, namespace, pod string, port int32, stream io.ReadWriteCloser) error {
	return errdefs.InvalidInput("port-forward " + errUnsupported)
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
