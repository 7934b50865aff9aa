package provider

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/tunnel"
)

// TestProbeTranslation: probes and the postStart hook are staged for the
// agent, with the API server's defaults and named ports resolved, and the
// agent is started with -probes; bad ones fail the pod with a reason.
func TestProbeTranslation(t *testing.T) {
	cfg := testCfg
	cfg.Agent, cfg.AgentURL = "/opt/slurm-vk-agent", "https://fetch.example"
	grace := int64(7)
	c := corev1.Container{Name: "web", Command: []string{"serve"},
		Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http"), HTTPHeaders: []corev1.HTTPHeader{{Name: "X-A", Value: "b"}}}}, InitialDelaySeconds: 5},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9000)}}, PeriodSeconds: 2, FailureThreshold: 1, TerminationGracePeriodSeconds: &grace},
		StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"cat", "/tmp/up"}}}},
		Lifecycle:      &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Sleep: &corev1.SleepAction{Seconds: 2}}},
	}
	pod := basePod("probed", c, corev1.Container{Name: "plain", Command: []string{"true"}})
	plan, err := Translate(pod, cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	var staged *StagedFile
	for i := range plan.Staged {
		if plan.Staged[i].Path == layout.StagedProbes {
			staged = &plan.Staged[i]
		}
	}
	if staged == nil {
		t.Fatal("no probes staged")
	}
	var got tunnel.Probes
	if err := json.Unmarshal(staged.Data, &got); err != nil {
		t.Fatal(err)
	}
	g := 7
	want := tunnel.Probes{Containers: []tunnel.ContainerProbes{{Name: "web", Grace: 30,
		Readiness: &tunnel.Probe{Handler: tunnel.Handler{HTTP: &tunnel.HTTPGet{Scheme: "HTTP", Port: 8080, Path: "/ready", Headers: [][2]string{{"X-A", "b"}}}}, InitialDelay: 5, Period: 10, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 3},
		Liveness:  &tunnel.Probe{Handler: tunnel.Handler{TCP: &tunnel.TCPProbe{Port: 9000}}, Period: 2, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 1, Grace: &g},
		Startup:   &tunnel.Probe{Handler: tunnel.Handler{Exec: []string{"cat", "/tmp/up"}}, Period: 10, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 3},
		PostStart: &tunnel.Handler{Sleep: 2},
	}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("staged probes:\n%s\nwant\n%s", staged.Data, must(json.Marshal(want)))
	}
	if !strings.Contains(plan.Spec.Script, ` -probes "$svk_pod_dir"/'_staged/agent/probes.json' -pod-dir "$svk_pod_dir"`) {
		t.Error("the agent is not started with -probes")
	}

	// Without probes, or without the agent, nothing is staged and the
	// agent's command line is as before.
	for name, mut := range map[string]func(*TranslateConfig, *corev1.Pod){
		"no probes": func(_ *TranslateConfig, p *corev1.Pod) { p.Spec.Containers = p.Spec.Containers[1:] },
		"no agent":  func(c *TranslateConfig, _ *corev1.Pod) { c.Agent = "" },
	} {
		cfg2, pod2 := cfg, pod.DeepCopy()
		mut(&cfg2, pod2)
		plan, err := Translate(pod2, cfg2, lookups)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range plan.Staged {
			if f.Path == layout.StagedProbes {
				t.Errorf("%s: probes staged", name)
			}
		}
		if strings.Contains(plan.Spec.Script, "-probes") {
			t.Errorf("%s: -probes in the script", name)
		}
	}

	for name, p := range map[string]*corev1.Probe{
		"unknown port name": {ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromString("nope")}}},
		"port 0":            {ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(0)}}},
		"two handlers":      {ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}, TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(1)}}},
		"no handler":        {},
		"empty command":     {ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{}}},
		"bad scheme":        {ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80), Scheme: "gopher"}}},
	} {
		bad := pod.DeepCopy()
		bad.Spec.Containers[0].LivenessProbe = p
		_, err := Translate(bad, cfg, lookups)
		var inv *InvalidPodError
		if !errors.As(err, &inv) || inv.Reason != "InvalidProbe" {
			t.Errorf("%s: %v, want InvalidProbe", name, err)
		}
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestProbeStatus: a running container with a readiness probe is ready,
// and the pod Ready, only while the agent says so; with a startup probe
// it is not started until then. Where probes do not run, running is
// ready.
func TestProbeStatus(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	startedAt := now.Add(-time.Minute)
	pod := basePod("p", corev1.Container{Name: "a",
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}},
		StartupProbe:   &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}},
		corev1.Container{Name: "b"})
	job := &slurmclient.Job{ID: 1, State: slurmclient.StateRunning, SubmitTime: startedAt, StartTime: startedAt}
	for _, tc := range []struct {
		name                   string
		probed, started, ready bool
		wantStarted, wantReady bool
		wantPodReady           corev1.ConditionStatus
	}{
		{"nothing passed yet", true, false, false, false, false, corev1.ConditionFalse},
		{"started, not ready", true, true, false, true, false, corev1.ConditionFalse},
		{"started and ready", true, true, true, true, true, corev1.ConditionTrue},
		{"ready is not enough before started", true, false, true, false, false, corev1.ConditionFalse},
		{"probes do not run here", false, false, false, true, true, corev1.ConditionTrue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			containers := map[string]fetchclient.Container{
				"a": {Current: fetchclient.Info{StartedAt: &startedAt, Started: tc.started, Ready: tc.ready}},
				"b": {Current: fetchclient.Info{StartedAt: &startedAt}},
			}
			o := observe(job, containers)
			o.probed = tc.probed
			st := podStatus(pod, o, now)
			a := st.ContainerStatuses[0]
			if a.State.Running == nil || *a.Started != tc.wantStarted || a.Ready != tc.wantReady {
				t.Errorf("container a: running %v started %v ready %v, want running, started %v, ready %v", a.State.Running != nil, *a.Started, a.Ready, tc.wantStarted, tc.wantReady)
			}
			if b := st.ContainerStatuses[1]; !b.Ready {
				t.Error("container b, without probes, is not ready")
			}
			for _, c := range st.Conditions {
				if (c.Type == corev1.PodReady || c.Type == corev1.ContainersReady) && c.Status != tc.wantPodReady {
					t.Errorf("%s %s, want %s", c.Type, c.Status, tc.wantPodReady)
				}
			}
		})
	}
	hooked := basePod("hooked", corev1.Container{Name: "a", Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}})
	for _, tc := range []struct {
		post, probed bool
		running      bool
	}{{false, true, false}, {true, true, true}, {false, false, true}} {
		o := observe(job, map[string]fetchclient.Container{"a": {Current: fetchclient.Info{StartedAt: &startedAt, PostStarted: tc.post}}})
		o.probed = tc.probed
		if a := podStatus(hooked, o, now).ContainerStatuses[0]; (a.State.Running != nil) != tc.running {
			t.Errorf("postStart run %v, probed %v: state %+v, want running %v (a kubelet's container runs once its postStart hook has)", tc.post, tc.probed, a.State, tc.running)
		}
	}
	if !watchesContainers(basePod("one", corev1.Container{Name: "a", ReadinessProbe: &corev1.Probe{}}), map[string]fetchclient.Container{"a": {Current: fetchclient.Info{StartedAt: &startedAt}}}) {
		t.Error("a started single container with a readiness probe is not watched: its readiness would never be read")
	}
}

// TestSidecarStatus: a sidecar runs beside the containers (Running, in
// the pod's readiness, Initialized once it has started); the containers
// wait while its startup probe has not passed; its code at the job's end
// is not the pod's.
func TestSidecarStatus(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	at := now.Add(-time.Minute)
	always := corev1.ContainerRestartPolicyAlways
	pod := basePod("p", corev1.Container{Name: "a"})
	pod.Spec.InitContainers = []corev1.Container{{Name: "side", RestartPolicy: &always,
		StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"true"}}}}}}
	cond := func(st corev1.PodStatus, typ corev1.PodConditionType) corev1.ConditionStatus {
		for _, c := range st.Conditions {
			if c.Type == typ {
				return c.Status
			}
		}
		return ""
	}
	running := &slurmclient.Job{ID: 1, State: slurmclient.StateRunning, SubmitTime: at, StartTime: at}

	o := observe(running, map[string]fetchclient.Container{"side": {Current: fetchclient.Info{StartedAt: &at}}})
	o.probed = true
	st := podStatus(pod, o, now)
	if side := st.InitContainerStatuses[0]; side.State.Running == nil || *side.Started {
		t.Errorf("sidecar before its startup probe: %+v, want running, not started", side)
	}
	if a := st.ContainerStatuses[0]; a.State.Waiting == nil || a.State.Waiting.Reason != "PodInitializing" {
		t.Errorf("container while the sidecar starts: %+v, want waiting PodInitializing", a.State)
	}
	if cond(st, corev1.PodInitialized) != corev1.ConditionFalse || st.Phase != corev1.PodPending {
		t.Errorf("Initialized %s, phase %s, want False, Pending", cond(st, corev1.PodInitialized), st.Phase)
	}

	o = observe(running, map[string]fetchclient.Container{"side": {Current: fetchclient.Info{StartedAt: &at, Started: true, Ready: true}}, "a": {Current: fetchclient.Info{StartedAt: &at}}})
	o.probed = true
	st = podStatus(pod, o, now)
	if side := st.InitContainerStatuses[0]; side.State.Running == nil || !*side.Started || !side.Ready {
		t.Errorf("sidecar started: %+v, want running, started, ready", side)
	}
	if st.Phase != corev1.PodRunning || cond(st, corev1.PodInitialized) != corev1.ConditionTrue || cond(st, corev1.PodReady) != corev1.ConditionTrue {
		t.Errorf("phase %s, Initialized %s, Ready %s, want Running, True, True", st.Phase, cond(st, corev1.PodInitialized), cond(st, corev1.PodReady))
	}

	done := &slurmclient.Job{ID: 1, State: slurmclient.StateCompleted, SubmitTime: at, StartTime: at, EndTime: now, ExitCode: slurmclient.ExitCode{Set: true}}
	code143, code0 := 143, 0
	st = podStatus(pod, observe(done, map[string]fetchclient.Container{
		"side": {Current: fetchclient.Info{StartedAt: &at, Exited: true, ExitCode: &code143}},
		"a":    {Current: fetchclient.Info{StartedAt: &at, Exited: true, ExitCode: &code0}}}), now)
	if st.Phase != corev1.PodSucceeded {
		t.Errorf("phase %s (%s), want Succeeded: the sidecar's TERM at the end is not a failure", st.Phase, st.Message)
	}
	if side := st.InitContainerStatuses[0]; side.State.Terminated == nil || side.State.Terminated.ExitCode != 143 {
		t.Errorf("sidecar at the end: %+v", side.State)
	}
}
