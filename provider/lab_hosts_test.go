package provider

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestLabEtcHosts: with each real container runtime, a container's
// /etc/hosts is the pod's, as a kubelet writes it: the kubelet's header,
// the pod's address and name, and its hostAliases.
func TestLabEtcHosts(t *testing.T) {
	r := newLabRig(t)
	p := r.start()
	for _, rt := range []string{RuntimePodman, RuntimeCharliecloud} {
		t.Run(rt, func(t *testing.T) {
			r.lab.RequireRuntime(t, rt)
			pod := labPod("hosts-"+rt[:2], corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/busybox:1", Command: []string{"cat", "/etc/hosts"}})
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			pod.Spec.HostAliases = []corev1.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo", "bar"}}}
			got := r.succeeded(t, p, pod)
			if !strings.HasPrefix(got, managedHostsHeader) || !strings.Contains(got, "\t"+pod.Name+"\n") || !strings.Contains(got, "123.45.67.89\tfoo\tbar\n") {
				t.Errorf("the container's /etc/hosts:\n%s\nwant the kubelet's header, the pod's name and 123.45.67.89\\tfoo\\tbar", got)
			}
		})
	}
}

// TestLabSecurityContext: readOnlyRootFilesystem with real podman (the
// container cannot write its root, as in the upstream spec), and
// allowPrivilegeEscalation false with runtime none (the process runs
// with no_new_privs).
func TestLabSecurityContext(t *testing.T) {
	r := newLabRig(t)
	p := r.start()
	yes, no := true, false
	t.Run("podman: read-only root", func(t *testing.T) {
		r.lab.RequireRuntime(t, RuntimePodman)
		pod := labPod("ro-root", corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/busybox:1", Command: []string{"sh", "-c", "echo test > /file; echo rc=$?"},
			SecurityContext: &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes}})
		pod.Annotations = map[string]string{AnnotationRuntime: RuntimePodman}
		if got := r.succeeded(t, p, pod); !strings.Contains(got, "Read-only file system") || !strings.Contains(got, "rc=1") {
			t.Errorf("log %q, want the write refused: Read-only file system", got)
		}
	})
	t.Run("none: no_new_privs", func(t *testing.T) {
		pod := labPod("nnp", sh("main", "grep NoNewPrivs /proc/self/status"))
		pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{AllowPrivilegeEscalation: &no}
		if got := r.succeeded(t, p, pod); !strings.Contains(got, "NoNewPrivs:\t1") {
			t.Errorf("log %q, want NoNewPrivs: 1", got)
		}
	})
}

// TestLabEnvNames: names a shell cannot hold (envFrom's data-1, with a
// prefix like "$_-") reach the container's process with real podman and
// Charliecloud (env run directly: a shell in between, busybox's ash or
// dash, drops them from what it passes on, as it would on any node).
func TestLabEnvNames(t *testing.T) {
	r := newLabRig(t)
	p := r.start()
	for _, rt := range []string{RuntimePodman, RuntimeCharliecloud} {
		t.Run(rt, func(t *testing.T) {
			r.lab.RequireRuntime(t, rt)
			pod := labPod("envnames-"+rt[:2], corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/busybox:1", Command: []string{"env"},
				Env: []corev1.EnvVar{{Name: "data-1", Value: "value-1"}, {Name: "$_-data.2", Value: "value 2"}}})
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			got := r.succeeded(t, p, pod)
			for _, want := range []string{"data-1=value-1\n", "$_-data.2=value 2\n"} {
				if !strings.Contains(got, want) {
					t.Errorf("the container's environment:\n%s\nwant %q", got, want)
				}
			}
		})
	}
}
