package provider

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

func TestPodStatus(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	start, end := now.Add(-time.Minute), now.Add(-time.Second)
	pod := basePod("p", corev1.Container{Name: "a"}, corev1.Container{Name: "b"})
	pod.Spec.InitContainers = []corev1.Container{{Name: "init"}}
	job := func(state slurmclient.JobState, reason string, rc, sig int) *slurmclient.Job {
		j := &slurmclient.Job{ID: 42, State: state, StateReason: reason, SubmitTime: start.Add(-time.Minute)}
		if state != "PENDING" {
			j.StartTime = start
		}
		if state.Terminal() {
			j.EndTime = end
			j.ExitCode = slurmclient.ExitCode{Set: true, ReturnCode: rc, Signal: sig}
		}
		return j
	}
	type cstate struct {
		waiting, terminatedReason string
		running                   bool
		exit                      int32
		at                        time.Time // finished (or, running, started) at, if not the job's times
	}
	tests := []struct {
		name      string
		job       *slurmclient.Job
		exits     map[string]int
		exitedAt  map[string]time.Time
		phase     corev1.PodPhase
		podReason string
		a, b      cstate
		// creating are containers whose latest attempt has not started
		// its process (no start marker); every other one has.
		creating []string
	}{
		{"pending on priority", job("PENDING", "Priority", 0, 0), nil, nil, corev1.PodPending, ReasonPending,
			cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}, nil},
		{"pending on resources", job("PENDING", "Resources", 0, 0), nil, nil, corev1.PodPending, ReasonPending,
			cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}, nil},
		{"running", job("RUNNING", "", 0, 0), map[string]int{"init": 0}, nil, corev1.PodRunning, "",
			cstate{running: true}, cstate{running: true}, nil},
		{"running, one container done", job("RUNNING", "", 0, 0), map[string]int{"init": 0, "b": 0}, nil, corev1.PodRunning, "",
			cstate{running: true}, cstate{terminatedReason: "Completed"}, nil},
		{"running, one container done: finished when its marker says", job("RUNNING", "", 0, 0), map[string]int{"init": 0, "b": 0},
			map[string]time.Time{"b": start.Add(10 * time.Second)}, corev1.PodRunning, "",
			cstate{running: true}, cstate{terminatedReason: "Completed", at: start.Add(10 * time.Second)}, nil},
		{"completed, marker times kept within the job", job("COMPLETED", "", 0, 0), map[string]int{"init": 0, "a": 0, "b": 0},
			map[string]time.Time{"a": start.Add(5 * time.Second), "b": end.Add(time.Hour)}, corev1.PodSucceeded, "",
			cstate{terminatedReason: "Completed", at: start.Add(5 * time.Second)}, cstate{terminatedReason: "Completed"}, nil},
		{"completed: a marker in the job's last second, past Slurm's truncated end, is kept", job("COMPLETED", "", 0, 0),
			map[string]int{"init": 0, "a": 0, "b": 0},
			map[string]time.Time{"a": start.Add(5 * time.Second), "b": end.Add(764 * time.Millisecond)}, corev1.PodSucceeded, "",
			cstate{terminatedReason: "Completed", at: start.Add(5 * time.Second)}, cstate{terminatedReason: "Completed", at: end.Add(764 * time.Millisecond)}, nil},
		{"init container's end is the containers' start", job("RUNNING", "", 0, 0), map[string]int{"init": 0},
			map[string]time.Time{"init": start.Add(7 * time.Second)}, corev1.PodRunning, "",
			cstate{running: true, at: start.Add(7 * time.Second)}, cstate{running: true, at: start.Add(7 * time.Second)}, nil},
		{"completed", job("COMPLETED", "", 0, 0), map[string]int{"init": 0, "a": 0, "b": 0}, nil, corev1.PodSucceeded, "",
			cstate{terminatedReason: "Completed"}, cstate{terminatedReason: "Completed"}, nil},
		{"failed with exit codes from markers", job("FAILED", "NonZeroExitCode", 3, 0), map[string]int{"init": 0, "a": 0, "b": 3}, nil, corev1.PodFailed, "",
			cstate{terminatedReason: "Completed"}, cstate{terminatedReason: "Error", exit: 3}, nil},
		{"failed without markers: the job's code", job("FAILED", "NonZeroExitCode", 5, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "",
			cstate{terminatedReason: "Error", exit: 5}, cstate{terminatedReason: "Error", exit: 5}, nil},
		{"cancelled by a signal", job("CANCELLED", "", 0, 15), map[string]int{"init": 0}, nil, corev1.PodFailed, "SlurmJobCancelled",
			cstate{terminatedReason: "SlurmJobCancelled", exit: 143}, cstate{terminatedReason: "SlurmJobCancelled", exit: 143}, nil},
		{"timeout", job("TIMEOUT", "TimeLimit", 0, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "DeadlineExceeded",
			cstate{terminatedReason: "DeadlineExceeded", exit: 137}, cstate{terminatedReason: "DeadlineExceeded", exit: 137}, nil},
		{"out of memory", job("OUT_OF_MEMORY", "OutOfMemory", 0, 9), map[string]int{"init": 0, "a": 137}, nil, corev1.PodFailed, "OOMKilled",
			cstate{terminatedReason: "OOMKilled", exit: 137}, cstate{terminatedReason: "OOMKilled", exit: 137}, nil},
		{"node failure", job("NODE_FAIL", "", 0, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "SlurmNodeFail",
			cstate{terminatedReason: "SlurmNodeFail", exit: 137}, cstate{terminatedReason: "SlurmNodeFail", exit: 137}, nil},
		{"preempted", job("PREEMPTED", "", 0, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "SlurmJobPreempted",
			cstate{terminatedReason: "SlurmJobPreempted", exit: 137}, cstate{terminatedReason: "SlurmJobPreempted", exit: 137}, nil},
		{"running, the containers being created: Pending, as a kubelet says", job("RUNNING", "", 0, 0), map[string]int{"init": 0},
			nil, corev1.PodPending, "", cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}, []string{"a", "b"}},
		{"running, one container started, the other being created: Pending", job("RUNNING", "", 0, 0), map[string]int{"init": 0},
			nil, corev1.PodPending, "", cstate{running: true}, cstate{waiting: "PodInitializing"}, []string{"b"}},
		{"running, the init container being created", job("RUNNING", "", 0, 0), nil,
			nil, corev1.PodPending, "", cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}, []string{"init", "a", "b"}},
		{"init container failed", job("FAILED", "NonZeroExitCode", 1, 0), map[string]int{"init": 1}, nil, corev1.PodFailed, "",
			cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}, nil},
		{"node failure before any marker", job("NODE_FAIL", "", 0, 0), nil, nil, corev1.PodFailed, "SlurmNodeFail",
			cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			attempts := map[string]fetchclient.Container{}
			for _, name := range []string{"init", "a", "b"} {
				if !slices.Contains(tt.creating, name) {
					attempts[name] = fetchclient.Container{Current: fetchclient.Info{Exists: true, StartedAt: &start}}
				}
			}
			st := podStatus(pod, observation{job: tt.job, exits: tt.exits, exitedAt: tt.exitedAt, attempts: attempts}, now)
			if st.Phase != tt.phase || st.Reason != tt.podReason {
				t.Errorf("phase %s reason %q, want %s %q", st.Phase, st.Reason, tt.phase, tt.podReason)
			}
			if tt.job.State == "PENDING" {
				// A pod with init containers: PodInitializing everywhere,
				// as on a kubelet, Slurm's reason in each message.
				for _, cs := range append(st.InitContainerStatuses, st.ContainerStatuses...) {
					if w := cs.State.Waiting; w == nil || w.Reason != "PodInitializing" {
						t.Errorf("container %s: %+v, want waiting PodInitializing", cs.Name, cs.State)
					}
					if w := cs.State.Waiting; w == nil || !strings.Contains(w.Message, tt.job.StateReason) {
						t.Errorf("container %s: %+v, want Slurm's reason in the message", cs.Name, cs.State)
					}
				}
			}
			for i, want := range []cstate{tt.a, tt.b} {
				s := st.ContainerStatuses[i].State
				switch {
				case want.waiting != "":
					if s.Waiting == nil || s.Waiting.Reason != want.waiting {
						t.Errorf("container %d: %+v, want waiting %s", i, s, want.waiting)
					}
				case want.running:
					since := start
					if !want.at.IsZero() {
						since = want.at
					}
					if s.Running == nil || !s.Running.StartedAt.Time.Equal(since) {
						t.Errorf("container %d: %+v, want running since %v", i, s, since)
					}
				default:
					finished := end
					if !tt.job.State.Terminal() {
						finished = now
					}
					if !want.at.IsZero() {
						finished = want.at
					}
					if s.Terminated == nil || s.Terminated.Reason != want.terminatedReason || s.Terminated.ExitCode != want.exit || !s.Terminated.FinishedAt.Time.Equal(finished) {
						t.Errorf("container %d: %+v, want terminated %s with %d at %v", i, s.Terminated, want.terminatedReason, want.exit, finished)
					}
				}
			}
			if tt.phase == corev1.PodPending && tt.job.State == slurmclient.StatePending && (st.Message == "" || st.ContainerStatuses[0].State.Waiting.Message == "") {
				t.Error("a pending pod must say why")
			}
		})
	}
}

// TestPodStatusRestarts: restarted containers report what a kubelet
// reports: restartCount, the last attempt's end as lastState, and
// CrashLoopBackOff while the job waits to start the next attempt.
func TestPodStatusRestarts(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	start := now.Add(-time.Minute)
	running := &slurmclient.Job{ID: 7, State: "RUNNING", SubmitTime: start, StartTime: start}
	code := func(c int) *int { return &c }
	at := func(s int) *time.Time { t := start.Add(time.Duration(s) * time.Second); return &t }
	attempt := func(n int, exit *int, started, ended *time.Time, reason string) fetchclient.Info {
		return fetchclient.Info{Attempt: n, Exists: true, Exited: exit != nil, ExitCode: exit, StartedAt: started, ExitedAt: ended, Reason: reason}
	}
	prev := func(i fetchclient.Info) *fetchclient.Info { return &i }
	tests := []struct {
		name     string
		policy   corev1.RestartPolicy
		job      *slurmclient.Job
		c        fetchclient.Container
		waiting  string
		running  bool
		term     string
		restarts int32
		last     int32 // last state's exit code; -1: none
	}{
		{"first attempt failed: back-off", corev1.RestartPolicyOnFailure, running,
			fetchclient.Container{Current: attempt(0, code(1), at(0), at(5), "")}, "CrashLoopBackOff", false, "", 0, 1},
		{"second attempt runs", corev1.RestartPolicyOnFailure, running,
			fetchclient.Container{Current: attempt(1, nil, at(15), nil, ""), Previous: prev(attempt(0, code(1), at(0), at(5), ""))}, "", true, "", 1, 1},
		{"third attempt succeeded: done", corev1.RestartPolicyOnFailure, running,
			fetchclient.Container{Current: attempt(2, code(0), at(40), at(41), ""), Previous: prev(attempt(1, code(2), at(15), at(20), ""))}, "", false, "Completed", 2, 2},
		{"Always restarts a success", corev1.RestartPolicyAlways, running,
			fetchclient.Container{Current: attempt(0, code(0), at(0), at(5), "")}, "CrashLoopBackOff", false, "", 0, 0},
		{"a pull failure backs off as ImagePullBackOff", corev1.RestartPolicyAlways, running,
			fetchclient.Container{Current: attempt(3, code(125), nil, at(1), "ErrImagePull"), Previous: prev(attempt(2, code(125), nil, nil, "ErrImagePull"))}, "ImagePullBackOff", false, "", 3, 125},
		{"Never: terminated, no back-off", corev1.RestartPolicyNever, running,
			fetchclient.Container{Current: attempt(0, code(1), at(0), at(5), "")}, "", false, "Error", 0, -1},
		{"job ended during a back-off: terminated", corev1.RestartPolicyOnFailure,
			&slurmclient.Job{ID: 7, State: "CANCELLED", SubmitTime: start, StartTime: start, EndTime: now},
			fetchclient.Container{Current: attempt(1, code(1), at(10), at(12), ""), Previous: prev(attempt(0, code(1), at(0), at(5), ""))}, "", false, "SlurmJobCancelled", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pod := basePod("r", corev1.Container{Name: "main", Image: "busybox"}, corev1.Container{Name: "side"})
			pod.Spec.RestartPolicy = tt.policy
			side := fetchclient.Container{Current: attempt(0, nil, at(0), nil, "")}
			st := podStatus(pod, observe(tt.job, map[string]fetchclient.Container{"main": tt.c, "side": side}), now)
			cs := st.ContainerStatuses[0]
			switch {
			case tt.waiting != "":
				if cs.State.Waiting == nil || cs.State.Waiting.Reason != tt.waiting || !strings.Contains(cs.State.Waiting.Message, "back-off") {
					t.Errorf("state %+v, want waiting %s", cs.State, tt.waiting)
				}
			case tt.running:
				if cs.State.Running == nil || !cs.State.Running.StartedAt.Time.Equal(*tt.c.Current.StartedAt) {
					t.Errorf("state %+v, want running since the attempt's start", cs.State)
				}
			default:
				if cs.State.Terminated == nil || cs.State.Terminated.Reason != tt.term {
					t.Errorf("state %+v, want terminated %s", cs.State, tt.term)
				}
			}
			if cs.RestartCount != tt.restarts {
				t.Errorf("restartCount %d, want %d", cs.RestartCount, tt.restarts)
			}
			last := cs.LastTerminationState.Terminated
			switch {
			case tt.last < 0 && last != nil:
				t.Errorf("lastState %+v, want none", last)
			case tt.last >= 0 && (last == nil || last.ExitCode != tt.last || last.FinishedAt.IsZero()):
				t.Errorf("lastState %+v, want exit %d with its end", last, tt.last)
			}
			if st.Phase != corev1.PodRunning && tt.job.State == "RUNNING" {
				t.Errorf("phase %s while the job runs", st.Phase)
			}
		})
	}
}

// TestFingerprintIgnoresGrowth: a running pod whose log grows has the same
// status; a new attempt or an exit changes it.
func TestFingerprintIgnoresGrowth(t *testing.T) {
	code := 1
	a := map[string]fetchclient.Container{"main": {Current: fetchclient.Info{Attempt: 0, Exists: true, Size: 10}}}
	grown := map[string]fetchclient.Container{"main": {Current: fetchclient.Info{Attempt: 0, Exists: true, Size: 99}}}
	exited := map[string]fetchclient.Container{"main": {Current: fetchclient.Info{Attempt: 0, Exists: true, Size: 99, Exited: true, ExitCode: &code}}}
	prev := exited["main"].Current
	next := map[string]fetchclient.Container{"main": {Current: fetchclient.Info{Attempt: 1}, Previous: &prev}}
	if fingerprint(a) != fingerprint(grown) {
		t.Error("a log that grew changed the fingerprint")
	}
	if fingerprint(a) == fingerprint(exited) || fingerprint(exited) == fingerprint(next) {
		t.Error("an exit or a new attempt left the fingerprint as it was")
	}
}

// TestConditionReasons: false conditions name the containers, in the
// kubelet's words (the upstream InitContainer specs read them).
func TestConditionReasons(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	at := now.Add(-time.Minute)
	pod := basePod("p", corev1.Container{Name: "run1"})
	pod.Spec.InitContainers = []corev1.Container{{Name: "init1"}, {Name: "init2"}}
	job := &slurmclient.Job{ID: 1, State: slurmclient.StateRunning, SubmitTime: at, StartTime: at}
	one := 1
	st := podStatus(pod, observe(job, map[string]fetchclient.Container{"init1": {Current: fetchclient.Info{StartedAt: &at, Exited: true, ExitCode: &one}}}), now)
	want := map[corev1.PodConditionType][2]string{
		corev1.PodInitialized:  {"ContainersNotInitialized", "containers with incomplete status: [init1 init2]"},
		corev1.ContainersReady: {"ContainersNotReady", "containers with unready status: [run1]"},
		corev1.PodReady:        {"ContainersNotReady", "containers with unready status: [run1]"},
	}
	check := func(st corev1.PodStatus, want map[corev1.PodConditionType][2]string) {
		t.Helper()
		for _, c := range st.Conditions {
			if w, ok := want[c.Type]; ok && (c.Status != corev1.ConditionFalse || c.Reason != w[0] || c.Message != w[1]) {
				t.Errorf("%s: %s %q %q, want False %q %q", c.Type, c.Status, c.Reason, c.Message, w[0], w[1])
			}
		}
	}
	check(st, want)
	// A sidecar that has not started is both: not initialized, and not
	// ready (named before the containers, as a kubelet does).
	always := corev1.ContainerRestartPolicyAlways
	side := basePod("p", corev1.Container{Name: "run1"})
	side.Spec.InitContainers = []corev1.Container{{Name: "side", RestartPolicy: &always}}
	check(podStatus(side, observe(job, nil), now), map[corev1.PodConditionType][2]string{
		corev1.PodInitialized:  {"ContainersNotInitialized", "containers with incomplete status: [side]"},
		corev1.ContainersReady: {"ContainersNotReady", "containers with unready status: [side run1]"},
	})
}
