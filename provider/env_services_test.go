package provider

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestServiceEnv: the variables a kubelet gives containers for services:
// the API server's always; the pod's namespace's with enableServiceLinks
// (the default); none for a headless service; the container's own env
// wins, and $(VAR) can refer to them.
func TestServiceEnv(t *testing.T) {
	svc := func(ns, name, ip string, ports ...corev1.ServicePort) *corev1.Service {
		return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{ClusterIP: ip, Ports: ports}}
	}
	services := map[string][]*corev1.Service{
		"default": {svc("default", "kubernetes", "10.0.0.1", corev1.ServicePort{Name: "https", Port: 443})},
		"ns": {svc("ns", "fooservice", "10.0.0.9", corev1.ServicePort{Port: 8765, Protocol: corev1.ProtocolTCP}),
			svc("ns", "headless", corev1.ClusterIPNone, corev1.ServicePort{Port: 80})},
	}
	look := lookups
	look.Services = func(ns string) ([]*corev1.Service, error) { return services[ns], nil }
	envOf := func(links *bool) string {
		t.Helper()
		pod := basePod("svc", corev1.Container{Name: "main", Image: "busybox", Command: []string{"env"},
			Env: []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_PORT", Value: "mine"}, {Name: "URL", Value: "http://$(FOOSERVICE_SERVICE_HOST):$(FOOSERVICE_SERVICE_PORT)"}}})
		pod.Namespace = "ns"
		pod.Spec.EnableServiceLinks = links
		cfg := testCfg
		cfg.Runtime = RuntimePodman
		plan, err := Translate(pod, cfg, look)
		if err != nil {
			t.Fatal(err)
		}
		return plan.Spec.Script
	}
	s := envOf(nil)
	for _, want := range []string{"'KUBERNETES_SERVICE_HOST=10.0.0.1'", "'KUBERNETES_SERVICE_PORT_HTTPS=443'", "'KUBERNETES_PORT=tcp://10.0.0.1:443'",
		"'FOOSERVICE_SERVICE_HOST=10.0.0.9'", "'FOOSERVICE_SERVICE_PORT=8765'", "'FOOSERVICE_PORT_8765_TCP_ADDR=10.0.0.9'", "'FOOSERVICE_PORT_8765_TCP_PROTO=tcp'",
		"'KUBERNETES_SERVICE_PORT=mine'", "'URL=http://10.0.0.9:8765'"} {
		if !strings.Contains(s, want) {
			t.Errorf("no %s in the script", want)
		}
	}
	if strings.Contains(s, "HEADLESS") || strings.Contains(s, "KUBERNETES_SERVICE_PORT=443") {
		t.Error("a headless service's variables, or the service's over the container's own")
	}
	no := false
	s = envOf(&no)
	if !strings.Contains(s, "'KUBERNETES_SERVICE_HOST=10.0.0.1'") || strings.Contains(s, "FOOSERVICE_SERVICE_HOST=") {
		t.Error("enableServiceLinks: false: want the API server's variables only")
	}
}
