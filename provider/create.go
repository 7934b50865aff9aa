package provider

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/virtual-kubelet/virtual-kubelet/log"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

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
		if err := p.removeEarlier(ctx, pod, old); err != nil {
			return err
		}
		p.mu.Lock()
	}
	adopted, isAdopted := p.adopt[JobComment(p.cfg.NodeName, pod)]
	// A pod this node reported on before (it has a start time) may have a
	// job already: one Slurm still knows, or one it has forgotten.
	seenBefore := pod.Status.StartTime != nil
	uncertain := p.uncertain[pod.UID] || (seenBefore && !p.recovered)
	p.mu.Unlock()

	if isAdopted {
		log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("job", adopted).Info("re-attached to its Slurm job")
		p.reattach(pod, adopted)
		return nil
	}
	// A job Slurm knows comes first: one whose submit answer was lost may
	// be running (its files say it started, not that it died).
	if uncertain {
		if id, found, err := p.findJob(ctx, JobComment(p.cfg.NodeName, pod)); err != nil {
			return err
		} else if found {
			p.track(pod, id)
			return nil
		}
	}
	if seenBefore || uncertain {
		if done, err := p.ranBefore(ctx, pod); err != nil || done {
			return err
		}
	}
	plan, tenant, err := p.plan(ctx, pod)
	if plan == nil {
		return err
	}
	// Tracked before anything is written or submitted: a delete, however
	// this ends, finds the pod and undoes it.
	p.mu.Lock()
	if p.pods[pod.UID] == nil {
		p.pods[pod.UID] = &podState{pod: pod.DeepCopy(), done: make(chan struct{})}
		p.byName[key(pod.Namespace, pod.Name)] = pod.UID
	}
	p.mu.Unlock()
	if plan.Agent {
		plan.Staged = append(plan.Staged, agentToken())
	}
	if err := p.stageFiles(ctx, pod, tenant, plan); err != nil {
		return err
	}
	p.mu.Lock()
	if st := p.pods[pod.UID]; st != nil {
		st.volumes, st.volumesAt = digests(volumeFiles(plan.Staged)), p.cfg.Now()
	}
	p.mu.Unlock()
	if uncertain {
		// Again, right before submitting: a lost request may have made its
		// job while the files were staged.
		if id, found, err := p.findJob(ctx, plan.Spec.Comment); err != nil {
			return err
		} else if found {
			p.track(pod, id)
			return nil
		}
	}
	return p.submit(ctx, pod, plan)
}

// removeEarlier undoes what an earlier pod of the same name left (see
// displace): its job, if it may still run, and its directory (its Secrets).
func (p *Provider) removeEarlier(ctx context.Context, pod *corev1.Pod, old *podState) error {
	if old.job != 0 && !old.final {
		log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("job", old.job).Info("cancelling the job of an earlier pod of the same name")
		if err := p.cancelAs(ctx, pod.Namespace, old.job); err != nil {
			return fmt.Errorf("cancel job %d of the earlier pod %s: %w", old.job, key(pod.Namespace, pod.Name), err)
		}
	}
	if err := p.files.DeletePod(ctx, PodRef(old.pod)); err != nil {
		return fmt.Errorf("remove the directory of the earlier pod %s: %w", key(pod.Namespace, pod.Name), err)
	}
	return nil
}

// translateConfig is the translation's configuration as of now (the
// node's allocatable changes).
func (p *Provider) translateConfig() TranslateConfig {
	cfg := p.cfg.TranslateConfig
	if p.cfg.Allocatable != nil {
		cfg.Allocatable = p.cfg.Allocatable()
	}
	return cfg
}

// plan translates the pod for its tenant. A nil plan with a nil error
// means the pod failed for good (its status says why); with an error, it
// waits and is tried again.
func (p *Provider) plan(ctx context.Context, pod *corev1.Pod) (*Plan, Tenant, error) {
	tenant, err := p.cfg.Tenancy.For(pod.Namespace)
	if err == nil {
		// The tenant's client cannot be made: nothing is written yet.
		if _, err = p.slurmAs(pod.Namespace); err != nil {
			return nil, tenant, err
		}
	}
	var plan *Plan
	if err == nil {
		plan, err = Translate(pod, p.translateConfig(), p.look)
	}
	var bad *InvalidPodError
	switch {
	case err == nil:
		if why := p.noNodeFits(plan.Spec); why != "" {
			log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("reason", ReasonNoNodeFits).Warn(why)
			p.fail(pod, ReasonNoNodeFits, why)
			return nil, tenant, nil
		}
		if plan.Spec.Account == "" {
			plan.Spec.Account = tenant.Account
		}
		return plan, tenant, nil
	case errors.As(err, &bad) && bad.Missing:
		// Like the kubelet: the object may just not have arrived yet (or
		// be created later). Wait, and let the controller retry.
		p.waiting(pod, "CreateContainerConfigError", bad.Message)
		return nil, tenant, err
	case errors.As(err, &bad):
		log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name)).WithField("reason", bad.Reason).Warn(bad.Message)
		p.fail(pod, bad.Reason, bad.Message)
		return nil, tenant, nil
	default:
		return nil, tenant, err
	}
}

// stageFiles creates the pod's directory and stages its files. The fetch
// endpoint down or its file system full is transient: the pod waits, with
// the reason, and the sync loop retries with back-off. Each step is
// bounded, so a fetch endpoint that is down holds a create for seconds,
// not minutes.
func (p *Provider) stageFiles(ctx context.Context, pod *corev1.Pod, tenant Tenant, plan *Plan) error {
	ref := PodRef(pod)
	ctx, cancel := context.WithTimeout(ctx, createStepTimeout)
	defer cancel()
	if err := p.files.CreatePod(ctx, ref, tenant.User); err != nil {
		err = fmt.Errorf("cannot create the pod's directory through the fetch endpoint: %w", err)
		p.waiting(pod, ReasonFetchUnavailable, err.Error())
		return err
	}
	for _, f := range plan.Staged {
		if err := p.files.Stage(ctx, ref, f.Path, f.Data, os.FileMode(f.Mode)); err != nil {
			err = fmt.Errorf("cannot stage %s through the fetch endpoint: %w", f.Path, err)
			p.waiting(pod, ReasonStagingFailed, err.Error())
			return err
		}
	}
	return nil
}

// submit submits the pod's job as its tenant. A job Slurm refuses fails
// the pod (its staged files go); any other error leaves the submit
// uncertain, so the next attempt looks for the job first.
func (p *Provider) submit(ctx context.Context, pod *corev1.Pod, plan *Plan) error {
	logger := log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name))
	slurm, err := p.slurmAs(pod.Namespace)
	if err != nil {
		return err
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
		if err := p.files.Unstage(ctx, PodRef(pod)); err != nil {
			logger.WithError(err).Warn("remove the staged files of a job Slurm refused; they go when the pod is deleted")
		}
		return nil
	default:
		p.mu.Lock()
		p.uncertain[pod.UID] = true
		gone := p.isGone(pod.UID)
		p.mu.Unlock()
		if gone && errors.Is(err, slurmclient.ErrOutcomeUnknown) {
			// Deleted while the submit was under way: DeletePod may not have
			// known to look for a job, so the job the lost answer may have
			// made is looked for here.
			p.cancelLost(ctx, pod)
		}
		return fmt.Errorf("submit job: %w", err)
	}
	logger.WithField("job", id).Info("submitted")
	p.event(pod, corev1.EventTypeNormal, ReasonSubmitted, fmt.Sprintf("Slurm job %d submitted to partition %s", id, plan.Spec.Partition))
	p.track(pod, id)
	return nil
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

// cancelLost cancels the job a lost submit answer may have made for a pod
// deleted meanwhile, trying for as long as the Slurm client retries a read
// (bounded by ctx). What it cannot reach, Recover cancels at the next
// start (the job of a pod that is gone).
func (p *Provider) cancelLost(ctx context.Context, pod *corev1.Pod) {
	logger := log.G(ctx).WithField("pod", key(pod.Namespace, pod.Name))
	id, found, err := p.findJob(ctx, JobComment(p.cfg.NodeName, pod))
	switch {
	case err != nil:
		logger.WithError(err).Warn("a submit's answer was lost for a deleted pod, and its job cannot be looked for now; it is cancelled at the next start")
	case found:
		p.track(pod, id) // cancels it: the pod is gone
	}
	p.mu.Lock()
	delete(p.uncertain, pod.UID)
	p.mu.Unlock()
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
func (p *Provider) track(pod *corev1.Pod, id slurmclient.JobID) { p.attach(pod, id, false) }

// reattach tracks a pod that recovery found its job for. It keeps the
// status this node reported last, which the API server's pod carries,
// until the sync loop reads the job: a restart must not show a running
// pod as Pending.
func (p *Provider) reattach(pod *corev1.Pod, id slurmclient.JobID) {
	p.attach(pod, id, pod.Status.StartTime != nil && pod.Status.Phase != "")
}

// attach records the pod's job; keep says the pod's status is current, else
// it is a new job's, pending.
func (p *Provider) attach(pod *corev1.Pod, id slurmclient.JobID, keep bool) {
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
	// Never read here, and a fifth of a pod's memory (the note on #18):
	// the status update goes to pods/status, where the API server keeps
	// the live object's managed fields whatever the request carries.
	pod.ManagedFields = nil
	if !keep {
		now := p.cfg.Now()
		pod.Status = podStatus(pod, observation{job: &slurmclient.Job{ID: id, State: slurmclient.StatePending, SubmitTime: now}}, now)
	}
	st := &podState{pod: pod, job: id, done: make(chan struct{})}
	p.mu.Lock()
	if old := p.pods[pod.UID]; old != nil { // what CreatePod staged
		st.volumes, st.volumesAt = old.volumes, old.volumesAt
	}
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
