package provider

import (
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Pod and container reasons this provider sets.
const (
	ReasonSubmitted = "SlurmJobSubmitted" // submitted; state not seen yet
	ReasonPending   = "SlurmJobPending"   // pod reason while Slurm holds the job
	ReasonLost      = "SlurmJobLost"      // the job vanished without a final state
	ReasonRejected  = "SlurmRejected"     // slurmctld refused the job
	ReasonDeleted   = "Deleted"           // the pod was deleted: the job is cancelled
	// The pod waits: the fetch endpoint cannot be reached, or cannot store
	// the pod's files (its file system full); retried.
	ReasonFetchUnavailable = "FetchEndpointUnavailable"
	ReasonStagingFailed    = "StagingFailed"
)

// jobReasons names how a job ended, as a pod/container reason.
var jobReasons = map[slurmclient.JobState]string{
	slurmclient.StateCancelled:   "SlurmJobCancelled",
	slurmclient.StateTimeout:     "DeadlineExceeded",
	slurmclient.StateNodeFail:    "SlurmNodeFail",
	slurmclient.StateOutOfMemory: "OOMKilled",
	slurmclient.StatePreempted:   "SlurmJobPreempted",
	slurmclient.StateBootFail:    "SlurmBootFail",
	slurmclient.StateDeadline:    "DeadlineExceeded",
}

// observation is everything the status is derived from.
type observation struct {
	job *slurmclient.Job
	// exits holds the exit codes found in containers' .exit markers.
	exits map[string]int
	// exitedAt holds when those markers were written, where known.
	exitedAt map[string]time.Time
	// reasons holds why a container ended, where its marker says (a pull
	// failure: ErrImagePull and the runtime's message).
	reasons map[string]exitReason
	// messages holds the termination message a container left (its
	// terminationMessagePath, or its log's tail), where it left one.
	messages map[string]string
	// attempts holds each container's latest attempt and the one before
	// (the maps above describe the latest).
	attempts map[string]fetchclient.Container
	// hostIP is the address of the node the job runs on, where known: the
	// pod's host IP and its IP (its containers share the node's network).
	hostIP string
	// probed: the job's agent runs the pod's probes (Provider.probed).
	probed bool
}

// observe reads the containers' attempts, as the fetch endpoint reported
// them, into an observation of job.
func observe(job *slurmclient.Job, containers map[string]fetchclient.Container) observation {
	o := observation{job: job, exits: map[string]int{}, exitedAt: map[string]time.Time{},
		reasons: map[string]exitReason{}, messages: map[string]string{}, attempts: containers}
	for name, c := range containers {
		info := c.Current
		if info.Exited && info.ExitCode != nil {
			o.exits[name] = *info.ExitCode
			if info.ExitedAt != nil {
				o.exitedAt[name] = *info.ExitedAt
			}
			if info.Reason != "" {
				o.reasons[name] = exitReason{info.Reason, info.Message}
			} else if info.Message != "" {
				o.messages[name] = info.Message
			}
		}
	}
	return o
}

// fingerprint sums up what a pod's status takes from its containers'
// files: when it is unchanged, so is the status. A log's size is not part
// of it: a pod that prints is not a new status each cycle.
func fingerprint(containers map[string]fetchclient.Container) string {
	type attempt struct {
		N              int
		Exited         bool
		Code           *int
		Started, Ended *time.Time
		Reason         string
		Probes         [3]bool
	}
	of := func(i *fetchclient.Info) *attempt {
		if i == nil {
			return nil
		}
		return &attempt{i.Attempt, i.Exited, i.ExitCode, i.StartedAt, i.ExitedAt, i.Reason, [3]bool{i.Started, i.Ready, i.PostStarted}}
	}
	sum := map[string][2]*attempt{}
	for name, c := range containers {
		sum[name] = [2]*attempt{of(&c.Current), of(c.Previous)}
	}
	b, _ := json.Marshal(sum) // map keys sorted: stable
	return string(b)
}

func containerNames(pod *corev1.Pod) []string {
	var names []string
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		names = append(names, c.Name)
	}
	return names
}

// restarts says whether a container that ended with code is started again
// under policy.
func restarts(policy corev1.RestartPolicy, code int) bool {
	return policy == corev1.RestartPolicyAlways || policy == corev1.RestartPolicyOnFailure && code != 0
}

// previous is a container's attempt before the latest, as its last state.
func previous(o observation, name string) *corev1.ContainerStateTerminated {
	return markerState(o.attempts[name].Previous)
}

// markerState is an ended attempt as its markers tell it (code, the
// reason the job gave, start and end), nil while it has not ended.
func markerState(info *fetchclient.Info) *corev1.ContainerStateTerminated {
	if info == nil || !info.Exited || info.ExitCode == nil {
		return nil
	}
	t := &corev1.ContainerStateTerminated{ExitCode: int32(*info.ExitCode), Reason: "Completed"}
	if t.ExitCode != 0 {
		t.Reason = "Error"
	}
	if info.Reason != "" {
		t.Reason, t.Message = info.Reason, info.Message
	} else {
		t.Message = info.Message // the termination message
	}
	if info.StartedAt != nil {
		t.StartedAt = metav1.NewTime(*info.StartedAt)
	}
	if info.ExitedAt != nil {
		t.FinishedAt = metav1.NewTime(*info.ExitedAt)
	}
	return t
}

// backOff is the state of a container waiting to be restarted, as the
// kubelet names it.
func backOff(pod *corev1.Pod, name string, o observation) *corev1.ContainerStateWaiting {
	reason := "CrashLoopBackOff"
	if r := o.reasons[name].reason; r == "ErrImagePull" || r == "ImagePullBackOff" {
		reason = "ImagePullBackOff"
	}
	return &corev1.ContainerStateWaiting{Reason: reason,
		Message: fmt.Sprintf("back-off restarting failed container=%s pod=%s_%s(%s)", name, pod.Name, pod.Namespace, pod.UID)}
}

type exitReason struct{ reason, message string }

// jobExitCode is the job's own exit code, as a container's would be.
func jobExitCode(j *slurmclient.Job) int {
	if j.ExitCode.Signal > 0 {
		return 128 + j.ExitCode.Signal
	}
	return j.ExitCode.ReturnCode
}

func mt(t time.Time) metav1.Time {
	if t.IsZero() {
		return metav1.Time{}
	}
	return metav1.NewTime(t)
}

// podStatus maps a job and its containers' exit markers to a pod status.
func podStatus(pod *corev1.Pod, o observation, now time.Time) corev1.PodStatus {
	j := o.job
	v := &statusView{pod: pod, o: o, j: j, now: now, terminal: j.State.Terminal(), began: j.StartTime}
	v.started = !j.StartTime.IsZero() && (j.State == slurmclient.StateRunning || v.terminal)
	st := corev1.PodStatus{StartTime: ptrTime(mt(j.SubmitTime))}
	if v.started && o.hostIP != "" {
		st.HostIP, st.PodIP = o.hostIP, o.hostIP
		st.HostIPs, st.PodIPs = []corev1.HostIP{{IP: o.hostIP}}, []corev1.PodIP{{IP: o.hostIP}}
	}
	if st.StartTime.IsZero() {
		st.StartTime = ptrTime(metav1.NewTime(now))
	}
	var initFailed, allReady, allOK bool
	st.InitContainerStatuses, initFailed = v.initContainers()
	st.ContainerStatuses, allReady, allOK = v.containers(initFailed)
	for i, c := range v.pod.Spec.InitContainers {
		if sidecar(&c) && !st.InitContainerStatuses[i].Ready {
			allReady = false // a sidecar counts in the pod's readiness
		}
	}
	st.Phase, st.Reason, st.Message = v.phase(allOK && !initFailed)
	if st.Phase == corev1.PodRunning && startingUp(st.ContainerStatuses) {
		st.Phase = corev1.PodPending // the job runs, the containers not yet
	}
	st.Conditions = conditions(st.Phase, allReady && st.Phase == corev1.PodRunning, !initialized(pod, st.InitContainerStatuses), now, st.Reason, st.Message)
	explain(pod, &st)
	return st
}

// explain gives the Initialized, ContainersReady and Ready conditions
// that are false the kubelet's reason and message, which name the
// containers (a pod's own reason stands where it has one).
func explain(pod *corev1.Pod, st *corev1.PodStatus) {
	var incomplete, unready []string
	for i, c := range st.InitContainerStatuses {
		side := sidecar(&pod.Spec.InitContainers[i])
		switch {
		case side && (c.Started == nil || !*c.Started) && c.State.Terminated == nil:
			incomplete = append(incomplete, c.Name)
		case !side && (c.State.Terminated == nil || c.State.Terminated.ExitCode != 0):
			incomplete = append(incomplete, c.Name)
		}
		if side && !c.Ready {
			unready = append(unready, c.Name)
		}
	}
	for _, c := range st.ContainerStatuses {
		if !c.Ready {
			unready = append(unready, c.Name)
		}
	}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		if c.Status != corev1.ConditionFalse {
			continue
		}
		switch {
		case c.Type == corev1.PodInitialized && len(incomplete) > 0:
			c.Reason, c.Message = "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: %v", incomplete)
		case (c.Type == corev1.ContainersReady || c.Type == corev1.PodReady && c.Reason == "") && len(unready) > 0:
			c.Reason, c.Message = "ContainersNotReady", fmt.Sprintf("containers with unready status: %v", unready)
		}
	}
}

// statusView is one observation of a pod's job, with what the parts of
// its status share.
type statusView struct {
	pod               *corev1.Pod
	o                 observation
	j                 *slurmclient.Job
	now               time.Time
	terminal, started bool
	// began is when the next container started: the job's start, then, as
	// init containers run one by one, each one's end where its marker says.
	began time.Time
}

// backingOff tells whether the container's latest attempt ended and the
// job will start another (the job runs on).
func (v *statusView) backingOff(name string, policy corev1.RestartPolicy) bool {
	code, ok := v.o.exits[name]
	return ok && !v.terminal && restarts(policy, code)
}

// running tells whether the container's latest attempt has started its
// process: the job script marks the start right before it execs the
// container, after the image is pulled (its attempt exists from before).
//
// A container with a postStart hook is running once the hook has run
// (where the agent runs it), as on a kubelet.
func (v *statusView) running(name string) bool {
	cur := v.o.attempts[name].Current
	return cur.StartedAt != nil && (!v.o.probed || cur.PostStarted || !hasPostStart(v.pod, name))
}

// creating is the reason of a container not started yet, as the
// kubelet gives it: PodInitializing in a pod with init containers.
func (v *statusView) creating() string {
	if len(v.pod.Spec.InitContainers) > 0 {
		return "PodInitializing"
	}
	return "ContainerCreating"
}

// startedAt is when the latest attempt started, where the job says.
func (v *statusView) startedAt(name string) time.Time {
	if a := v.o.attempts[name].Current.StartedAt; a != nil && !a.Before(v.began) {
		return *a
	}
	return v.began
}

// terminated is the state of a container's ended attempt.
func (v *statusView) terminated(name string, fallbackReason string) *corev1.ContainerStateTerminated {
	j, o := v.j, v.o
	t := &corev1.ContainerStateTerminated{StartedAt: mt(v.startedAt(name)), FinishedAt: mt(j.EndTime)}
	if !v.terminal {
		t.FinishedAt = metav1.NewTime(v.now) // ended while the job runs on: seen now
	}
	// The marker's time is the container's own end; it is the compute
	// node's clock, so keep it between the job's start and its end.
	// Slurm reports the end in whole seconds (truncated), so a marker
	// written in the job's last second is up to a second past it.
	latest := t.FinishedAt.Time
	if v.terminal {
		latest = latest.Add(time.Second)
	}
	if at, ok := o.exitedAt[name]; ok && at.Before(latest) && !at.Before(v.began) {
		t.FinishedAt = metav1.NewTime(at)
	}
	if code, ok := o.exits[name]; ok {
		t.ExitCode = int32(code)
	} else {
		t.ExitCode = int32(jobExitCode(j))
		if t.ExitCode == 0 && j.State != slurmclient.StateCompleted {
			t.ExitCode = 137 // ended by Slurm without a code of its own
		}
	}
	switch {
	case jobReasons[j.State] != "" && t.ExitCode != 0:
		t.Reason = jobReasons[j.State]
	case t.ExitCode == 0:
		t.Reason = "Completed"
	default:
		t.Reason = fallbackReason
	}
	if _, ok := o.exits[name]; ok {
		t.Message = o.messages[name] // its termination message, as a kubelet has it
	} else {
		t.Message = fmt.Sprintf("Slurm job %d: %s", j.ID, j.State) // ended by Slurm, no marker
	}
	if r, ok := o.reasons[name]; ok {
		t.Reason, t.Message = r.reason, r.message
	}
	return t
}

// initContainers ran one by one, first: once the job runs, they are done
// (or the job failed in one of them). initFailed is true when the
// containers after them did not (or not yet) start.
func (v *statusView) initContainers() (out []corev1.ContainerStatus, initFailed bool) {
	policy := initPolicy(v.pod)
	for _, c := range v.pod.Spec.InitContainers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, RestartCount: int32(v.o.attempts[c.Name].Current.Attempt)}
		cs.LastTerminationState.Terminated = previous(v.o, c.Name)
		_, exited := v.o.exits[c.Name]
		if sidecar(&c) {
			initFailed = v.sidecar(&c, &cs, exited, initFailed)
			out = append(out, cs)
			continue
		}
		switch {
		case !initFailed && v.backingOff(c.Name, policy):
			cs.LastTerminationState.Terminated = v.terminated(c.Name, "Error")
			cs.State.Waiting = backOff(v.pod, c.Name, v.o)
			initFailed = true // the following ones wait
		case exited || (v.terminal && v.started && !initFailed):
			cs.State.Terminated = v.terminated(c.Name, "Error")
			cs.Ready = cs.State.Terminated.ExitCode == 0
			if cs.State.Terminated.ExitCode != 0 {
				initFailed = true
			}
			if _, known := v.o.exitedAt[c.Name]; known {
				v.began = cs.State.Terminated.FinishedAt.Time
			}
		case v.started && !initFailed && !v.terminal && v.running(c.Name):
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: mt(v.startedAt(c.Name))}
			initFailed = true // the following ones wait
		case v.started && !initFailed && !v.terminal:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"} // being created
			initFailed = true
		case (v.j.State == slurmclient.StatePending || !v.started) && !v.terminal:
			// As a kubelet: PodInitializing; Slurm's reason is in the
			// message (the pod's, and its condition's).
			cs.State.Waiting = v.pending()
			cs.State.Waiting.Reason = "PodInitializing"
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		}
		out = append(out, cs)
	}
	return out, initFailed
}

// pending is the state of a container whose job waits in Slurm's queue:
// Slurm's reason, and the pending message.
func (v *statusView) pending() *corev1.ContainerStateWaiting {
	reason := v.j.StateReason
	if reason == "" {
		reason = ReasonSubmitted
	}
	return &corev1.ContainerStateWaiting{Reason: reason, Message: pendingMessage(v.j)}
}

// sidecar is a sidecar's status (an init container that runs beside the
// others, restarted whatever its exit, until they end): the containers
// after it wait until it has started; its exit code, once the job ends,
// is not the pod's. It says whether the ones after it wait.
func (v *statusView) sidecar(c *corev1.Container, cs *corev1.ContainerStatus, exited, waiting bool) bool {
	switch {
	case waiting && !v.terminal:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		return true
	case v.terminal:
		if exited || (v.started && !waiting) {
			cs.State.Terminated = v.terminated(c.Name, "Error")
		} else {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		}
		cs.Started = ptrBool(false)
		return waiting
	case !v.started:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		return true
	case v.backingOff(c.Name, corev1.RestartPolicyAlways):
		cs.LastTerminationState.Terminated = v.terminated(c.Name, "Error")
		cs.State.Waiting = backOff(v.pod, c.Name, v.o)
		cs.Started = ptrBool(false)
		return false // it has run: the ones after it went on
	case !v.running(c.Name):
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		cs.Started = ptrBool(false)
		return true
	}
	cs.State.Running = &corev1.ContainerStateRunning{StartedAt: mt(v.startedAt(c.Name))}
	started, ready := probeState(c, v.o.attempts[c.Name].Current, v.o.probed)
	cs.Started, cs.Ready = ptrBool(started), ready
	return !started && cs.RestartCount == 0
}

// containers are the pod's regular containers, which run at once once
// the init containers are done.
func (v *statusView) containers(initFailed bool) (out []corev1.ContainerStatus, allReady, allOK bool) {
	j, policy := v.j, restartPolicy(v.pod)
	allReady, allOK = true, true
	for _, c := range v.pod.Spec.Containers {
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: c.Image, RestartCount: int32(v.o.attempts[c.Name].Current.Attempt)}
		cs.LastTerminationState.Terminated = previous(v.o, c.Name)
		_, exited := v.o.exits[c.Name]
		switch {
		case j.State == slurmclient.StatePending || !v.started:
			cs.State.Waiting = v.pending()
			if len(v.pod.Spec.InitContainers) > 0 {
				// As a kubelet: the init containers come first; Slurm's
				// reason is in the message.
				cs.State.Waiting.Reason = "PodInitializing"
			}
		case initFailed && !v.terminal:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		case initFailed && v.terminal:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing", Message: "an init container failed"}
			allOK = false
		case v.backingOff(c.Name, policy):
			cs.LastTerminationState.Terminated = v.terminated(c.Name, "Error")
			cs.State.Waiting = backOff(v.pod, c.Name, v.o)
		case exited || v.terminal:
			cs.State.Terminated = v.terminated(c.Name, "Error")
			if cs.State.Terminated.ExitCode != 0 {
				allOK = false
			}
		case !v.running(c.Name):
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: v.creating()}
			cs.Started = ptrBool(false)
		default:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: mt(v.startedAt(c.Name))}
			started, ready := probeState(&c, v.o.attempts[c.Name].Current, v.o.probed)
			cs.Started = ptrBool(started)
			cs.Ready = ready
		}
		if !cs.Ready {
			allReady = false
		}
		out = append(out, cs)
	}
	return out, allReady, allOK
}

// phase is the pod's phase, with a reason and message where the job says
// why; succeeded is true when every container ended with 0.
func (v *statusView) phase(succeeded bool) (corev1.PodPhase, string, string) {
	j := v.j
	switch {
	case j.State == slurmclient.StatePending || (!v.started && !v.terminal):
		return corev1.PodPending, ReasonPending, pendingMessage(j)
	case !v.terminal:
		return corev1.PodRunning, "", ""
	case j.State == slurmclient.StateCompleted && succeeded:
		return corev1.PodSucceeded, "", ""
	default:
		msg := fmt.Sprintf("Slurm job %d ended %s", j.ID, j.State)
		if j.StateReason != "" {
			msg += " (" + j.StateReason + ")"
		}
		return corev1.PodFailed, jobReasons[j.State], msg
	}
}

// startingUp tells whether a pod whose job runs is still Pending as a
// kubelet counts it: a container waits to start (being created, or for the
// init containers) and has not run before.
func startingUp(cs []corev1.ContainerStatus) bool {
	for _, c := range cs {
		if c.State.Waiting != nil && c.LastTerminationState.Terminated == nil {
			return true
		}
	}
	return false
}

// initialized tells whether every init container has succeeded (true
// without any), the pod's Initialized condition.
func initialized(pod *corev1.Pod, inits []corev1.ContainerStatus) bool {
	for i, c := range inits {
		if sidecar(&pod.Spec.InitContainers[i]) {
			if c.Started == nil || !*c.Started {
				if c.State.Terminated == nil { // ended with the job: it had run
					return false
				}
			}
			continue
		}
		if c.State.Terminated == nil || c.State.Terminated.ExitCode != 0 {
			return false
		}
	}
	return true
}

func pendingMessage(j *slurmclient.Job) string {
	msg := fmt.Sprintf("Slurm job %d is pending", j.ID)
	if j.StateReason != "" {
		msg += ": " + j.StateReason
	}
	if j.StateDesc != "" {
		msg += " (" + j.StateDesc + ")"
	}
	return msg
}

func conditions(phase corev1.PodPhase, ready, initPending bool, now time.Time, reason, msg string) []corev1.PodCondition {
	t := metav1.NewTime(now)
	b := func(v bool) corev1.ConditionStatus {
		if v {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	readyCond := corev1.PodCondition{Type: corev1.PodReady, Status: b(ready), LastTransitionTime: t}
	if !ready && reason != "" {
		readyCond.Reason, readyCond.Message = reason, msg
	}
	return []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t},
		{Type: corev1.PodInitialized, Status: b(!initPending), LastTransitionTime: t},
		{Type: corev1.ContainersReady, Status: b(ready), LastTransitionTime: t},
		readyCond,
	}
}

// failedStatus is the status of a pod that never became a job (or whose
// job is gone): every container terminated with the reason.
func failedStatus(pod *corev1.Pod, reason, message string, now time.Time) corev1.PodStatus {
	st := corev1.PodStatus{Phase: corev1.PodFailed, Reason: reason, Message: message, StartTime: ptrTime(metav1.NewTime(now))}
	term := func(c corev1.Container) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: c.Name, Image: c.Image, State: corev1.ContainerState{
			Terminated: &corev1.ContainerStateTerminated{ExitCode: 128, Reason: reason, Message: message,
				FinishedAt: metav1.NewTime(now)}}}
	}
	for _, c := range pod.Spec.InitContainers {
		st.InitContainerStatuses = append(st.InitContainerStatuses, term(c))
	}
	for _, c := range pod.Spec.Containers {
		st.ContainerStatuses = append(st.ContainerStatuses, term(c))
	}
	st.Conditions = conditions(corev1.PodFailed, false, false, now, reason, message)
	return st
}

func ptrTime(t metav1.Time) *metav1.Time { return &t }
func ptrBool(b bool) *bool               { return &b }
