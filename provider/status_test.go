package provider

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

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
	}{
		{"pending on priority", job("PENDING", "Priority", 0, 0), nil, nil, corev1.PodPending, ReasonPending,
			cstate{waiting: "Priority"}, cstate{waiting: "Priority"}},
		{"pending on resources", job("PENDING", "Resources", 0, 0), nil, nil, corev1.PodPending, ReasonPending,
			cstate{waiting: "Resources"}, cstate{waiting: "Resources"}},
		{"running", job("RUNNING", "None", 0, 0), map[string]int{"init": 0}, nil, corev1.PodRunning, "",
			cstate{running: true}, cstate{running: true}},
		{"running, one container done", job("RUNNING", "None", 0, 0), map[string]int{"init": 0, "b": 0}, nil, corev1.PodRunning, "",
			cstate{running: true}, cstate{terminatedReason: "Completed"}},
		{"running, one container done: finished when its marker says", job("RUNNING", "None", 0, 0), map[string]int{"init": 0, "b": 0},
			map[string]time.Time{"b": start.Add(10 * time.Second)}, corev1.PodRunning, "",
			cstate{running: true}, cstate{terminatedReason: "Completed", at: start.Add(10 * time.Second)}},
		{"completed, marker times kept within the job", job("COMPLETED", "None", 0, 0), map[string]int{"init": 0, "a": 0, "b": 0},
			map[string]time.Time{"a": start.Add(5 * time.Second), "b": end.Add(time.Hour)}, corev1.PodSucceeded, "",
			cstate{terminatedReason: "Completed", at: start.Add(5 * time.Second)}, cstate{terminatedReason: "Completed"}},
		{"completed: a marker in the job's last second, past Slurm's truncated end, is kept", job("COMPLETED", "None", 0, 0),
			map[string]int{"init": 0, "a": 0, "b": 0},
			map[string]time.Time{"a": start.Add(5 * time.Second), "b": end.Add(764 * time.Millisecond)}, corev1.PodSucceeded, "",
			cstate{terminatedReason: "Completed", at: start.Add(5 * time.Second)}, cstate{terminatedReason: "Completed", at: end.Add(764 * time.Millisecond)}},
		{"init container's end is the containers' start", job("RUNNING", "None", 0, 0), map[string]int{"init": 0},
			map[string]time.Time{"init": start.Add(7 * time.Second)}, corev1.PodRunning, "",
			cstate{running: true, at: start.Add(7 * time.Second)}, cstate{running: true, at: start.Add(7 * time.Second)}},
		{"completed", job("COMPLETED", "None", 0, 0), map[string]int{"init": 0, "a": 0, "b": 0}, nil, corev1.PodSucceeded, "",
			cstate{terminatedReason: "Completed"}, cstate{terminatedReason: "Completed"}},
		{"failed with exit codes from markers", job("FAILED", "NonZeroExitCode", 3, 0), map[string]int{"init": 0, "a": 0, "b": 3}, nil, corev1.PodFailed, "",
			cstate{terminatedReason: "Completed"}, cstate{terminatedReason: "Error", exit: 3}},
		{"failed without markers: the job's code", job("FAILED", "NonZeroExitCode", 5, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "",
			cstate{terminatedReason: "Error", exit: 5}, cstate{terminatedReason: "Error", exit: 5}},
		{"cancelled by a signal", job("CANCELLED", "None", 0, 15), map[string]int{"init": 0}, nil, corev1.PodFailed, "SlurmJobCancelled",
			cstate{terminatedReason: "SlurmJobCancelled", exit: 143}, cstate{terminatedReason: "SlurmJobCancelled", exit: 143}},
		{"timeout", job("TIMEOUT", "TimeLimit", 0, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "DeadlineExceeded",
			cstate{terminatedReason: "DeadlineExceeded", exit: 137}, cstate{terminatedReason: "DeadlineExceeded", exit: 137}},
		{"out of memory", job("OUT_OF_MEMORY", "OutOfMemory", 0, 9), map[string]int{"init": 0, "a": 137}, nil, corev1.PodFailed, "OOMKilled",
			cstate{terminatedReason: "OOMKilled", exit: 137}, cstate{terminatedReason: "OOMKilled", exit: 137}},
		{"node failure", job("NODE_FAIL", "None", 0, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "SlurmNodeFail",
			cstate{terminatedReason: "SlurmNodeFail", exit: 137}, cstate{terminatedReason: "SlurmNodeFail", exit: 137}},
		{"preempted", job("PREEMPTED", "None", 0, 0), map[string]int{"init": 0}, nil, corev1.PodFailed, "SlurmJobPreempted",
			cstate{terminatedReason: "SlurmJobPreempted", exit: 137}, cstate{terminatedReason: "SlurmJobPreempted", exit: 137}},
		{"init container failed", job("FAILED", "NonZeroExitCode", 1, 0), map[string]int{"init": 1}, nil, corev1.PodFailed, "",
			cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}},
		{"node failure before any marker", job("NODE_FAIL", "None", 0, 0), nil, nil, corev1.PodFailed, "SlurmNodeFail",
			cstate{waiting: "PodInitializing"}, cstate{waiting: "PodInitializing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := podStatus(pod, observation{job: tt.job, exits: tt.exits, exitedAt: tt.exitedAt}, now)
			if st.Phase != tt.phase || st.Reason != tt.podReason {
				t.Errorf("phase %s reason %q, want %s %q", st.Phase, st.Reason, tt.phase, tt.podReason)
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
			if tt.phase == corev1.PodPending && (st.Message == "" || st.ContainerStatuses[0].State.Waiting.Message == "") {
				t.Error("a pending pod must say why")
			}
		})
	}
}
