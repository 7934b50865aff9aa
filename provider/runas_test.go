package provider

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestRunAs: securityContext's runAsUser and runAsGroup (the container's
// over the pod's) reach podman's --user; a runtime that runs containers as
// the job's user fails a container that asks for another with the reason
// (it does not run it as someone else); runAsNonRoot with user 0 is
// refused as a kubelet refuses it.
func TestRunAs(t *testing.T) {
	i := func(v int64) *int64 { return &v }
	yes := true
	pod := func(podSC *corev1.PodSecurityContext, sc *corev1.SecurityContext) *corev1.Pod {
		p := basePod("runas", corev1.Container{Name: "main", Image: "busybox", Command: []string{"id"}, SecurityContext: sc})
		p.Spec.SecurityContext = podSC
		return p
	}
	podman := testCfg
	podman.Runtime = RuntimePodman
	for _, tt := range []struct {
		name string
		pod  *corev1.Pod
		user string
	}{
		{"none set: the job's user", pod(nil, nil), `--user "$(id -u):$(id -g)"`},
		{"the pod's", pod(&corev1.PodSecurityContext{RunAsUser: i(1000), RunAsGroup: i(3000)}, nil), "--user 1000:3000"},
		{"the container's over the pod's", pod(&corev1.PodSecurityContext{RunAsUser: i(1000), RunAsGroup: i(3000)}, &corev1.SecurityContext{RunAsUser: i(65534)}), "--user 65534:3000"},
		{"a user alone: the image's group for it", pod(nil, &corev1.SecurityContext{RunAsUser: i(65534)}), "--user 65534 "},
		{"a group alone", pod(nil, &corev1.SecurityContext{RunAsGroup: i(7)}), `--user "$(id -u)":7`},
	} {
		plan, err := Translate(tt.pod, podman, lookups)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !strings.Contains(plan.Spec.Script, tt.user) {
			t.Errorf("%s: the script has no %s", tt.name, tt.user)
		}
	}

	_, err := Translate(pod(&corev1.PodSecurityContext{RunAsNonRoot: &yes}, &corev1.SecurityContext{RunAsUser: i(0)}), podman, lookups)
	var ip *InvalidPodError
	if !errors.As(err, &ip) || ip.Reason != "CreateContainerConfigError" || !strings.Contains(ip.Message, "non-root") {
		t.Errorf("runAsNonRoot with runAsUser 0: %v, want CreateContainerConfigError", err)
	}

	// Runtime none: the job runs as this test's user; another uid fails
	// the container with the reason in its marker, and it does not run.
	dir := t.TempDir()
	cfg := testCfg
	cfg.SharedRoot = filepath.Join(dir, "shared")
	p := basePod("none-runas", corev1.Container{Name: "main", Command: []string{"touch", filepath.Join(dir, "ran")},
		SecurityContext: &corev1.SecurityContext{RunAsUser: i(int64(os.Getuid() + 1))}})
	plan, err := Translate(p, cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", plan.Spec.Script)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "SLURM_JOB_ID=7"}
	cmd.Run()
	m, _ := os.ReadFile(PodRef(p).Path(cfg.SharedRoot, "main", "0.exit"))
	if !strings.HasPrefix(string(m), "126\nRunAsNotSupported\nruntime none runs a container as the job's user") {
		t.Errorf("runtime none, another runAsUser: marker %q, want 126 RunAsNotSupported", m)
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		t.Error("the container ran as the job's user although it asked for another")
	}
}
