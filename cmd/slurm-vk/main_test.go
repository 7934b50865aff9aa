package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/server"
	"github.com/slurmkube/slurm-vk/provider"
	"github.com/slurmkube/slurm-vk/test/labenv"
)

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestLabVirtualNode runs the binary's wiring (virtual-kubelet's node and
// pod controllers, the kubelet API) with a fake clientset against the lab:
// the node registers with its taint and the partition's capacity, a pod
// bound to it runs as a Slurm job, its logs stream through the kubelet
// API, and it ends Succeeded.
func TestLabVirtualNode(t *testing.T) {
	lab := labenv.Require(t)
	root, err := os.MkdirTemp(lab.Shared, "vnode-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chown(root, lab.UID, lab.UID)
	t.Cleanup(func() { os.RemoveAll(root) })
	tok := root + "/.token"
	os.WriteFile(tok, []byte("vnode-token"), 0o600)
	fetchURL := fetchtest.Start(t, server.Config{Root: root, TokenFile: tok, Owner: &server.Owner{UID: lab.UID, GID: lab.UID}})

	port, metricsPort := freePort(t), freePort(t)
	o := &options{MetricsListen: fmt.Sprintf("127.0.0.1:%d", metricsPort), NodeName: "slurm-" + lab.Suite, Partition: lab.Partition, SlurmrestdURL: lab.URL, SlurmUser: lab.User,
		SlurmTokenFile: lab.TokenFile, SlurmAPIVersion: "auto", FetchURL: fetchURL, FetchTokenFile: tok, SharedRoot: root,
		Runtime: provider.RuntimeNone, Listen: fmt.Sprintf("127.0.0.1:%d", port), NodeIP: "127.0.0.1",
		StatusInterval: metav1.Duration{Duration: 300 * time.Millisecond}, NodeInterval: metav1.Duration{Duration: time.Second}, MaxPods: 50,
		labels: map[string]string{"site.example/gpu": "none"}, taints: []corev1.Taint{{Key: "site.example/slurm", Effect: corev1.TaintEffectPreferNoSchedule}}}
	kube := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, o, kube) }()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-errc
		}
	}()

	var n *corev1.Node
	waitUntil(t, "node registered and ready", func() bool {
		n, err = kube.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
	if len(n.Spec.Taints) != 2 || n.Spec.Taints[0].Key != provider.TaintKey || n.Spec.Taints[1].Key != "site.example/slurm" ||
		n.Labels[provider.LabelPartition] != lab.Partition || n.Labels[provider.LabelSlurmVersion] != lab.Version || n.Labels["site.example/gpu"] != "none" {
		t.Errorf("node taints %v labels %v", n.Spec.Taints, n.Labels)
	}
	// kubectl get nodes -o wide: Slurm as the OS image, the compute
	// nodes' kernel, the runtime.
	if ni := n.Status.NodeInfo; ni.OSImage != fmt.Sprintf("Slurm %s (cluster lab-%s, partition %s)", lab.Version, lab.Suite, lab.Partition) ||
		ni.KernelVersion == "" || ni.ContainerRuntimeVersion != o.Runtime+"://slurm-job" {
		t.Errorf("node info %+v", ni)
	}
	// kubectl describe node: the partition's real nodes, all up.
	for _, c := range n.Status.Conditions {
		if c.Type == provider.ConditionSlurmNodesDown {
			for _, name := range lab.Nodes {
				if c.Status != corev1.ConditionFalse || !strings.Contains(c.Message, name+" ") {
					t.Errorf("condition %s: %s %q, want False naming %s", c.Type, c.Status, c.Message, name)
				}
			}
		}
	}
	if cpu := n.Status.Capacity[corev1.ResourceCPU]; cpu.Value() != int64(lab.TotalCPUs) || n.Status.DaemonEndpoints.KubeletEndpoint.Port != int32(port) {
		t.Errorf("capacity %v, kubelet port %d", n.Status.Capacity, n.Status.DaemonEndpoints.KubeletEndpoint.Port)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello", UID: "aaaabbbb-cccc-4ddd-8eee-000011112222"},
		Spec: corev1.PodSpec{NodeName: o.NodeName, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main",
			Command: []string{"/bin/sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"}}}},
	}
	if _, err := kube.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "pod running", func() bool {
		p, err := kube.CoreV1().Pods("default").Get(ctx, "hello", metav1.GetOptions{})
		return err == nil && (p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded)
	})
	// kubectl logs -f, as the API server would proxy it.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Get(fmt.Sprintf("https://127.0.0.1:%d/containerLogs/default/hello/main?follow=true", port))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(body) != "tick 1\ntick 2\ntick 3\n" {
		t.Fatalf("logs: HTTP %d %q %v", resp.StatusCode, body, err)
	}
	waitUntil(t, "pod succeeded", func() bool {
		p, err := kube.CoreV1().Pods("default").Get(ctx, "hello", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodSucceeded
	})
	// A pod that cannot run: Failed with the reason, a Warning event, no job.
	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "needs-pvc", UID: "aaaabbbb-cccc-4ddd-8eee-000011113333"},
		Spec: corev1.PodSpec{NodeName: o.NodeName, RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main", Command: []string{"true"}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}}},
	}
	if _, err := kube.CoreV1().Pods("default").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "malformed pod failed", func() bool {
		p, err := kube.CoreV1().Pods("default").Get(ctx, "needs-pvc", metav1.GetOptions{})
		return err == nil && p.Status.Phase == corev1.PodFailed && p.Status.Reason == "UnsupportedVolume"
	})
	waitUntil(t, "events", func() bool {
		evs, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			seen[e.InvolvedObject.Name+"/"+e.Type+"/"+e.Reason] = true
		}
		return seen["hello/Normal/"+provider.ReasonSubmitted] && seen["needs-pvc/Warning/UnsupportedVolume"]
	})

	// Metrics.
	resp, err = http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort))
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`slurm_vk_pods{phase="Succeeded"} 1`, `slurm_vk_pods{phase="Failed"} 1`,
		`slurm_vk_slurmrestd_requests_total{op="submit",outcome="ok"} 1`, `slurm_vk_log_streams_active 0`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", metricsPort)); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// exec is refused with a reason, not a crash.
	resp, err = hc.Post(fmt.Sprintf("https://127.0.0.1:%d/exec/default/hello/main?command=ls&output=1", port), "", nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("exec: HTTP %d %s", resp.StatusCode, b)
		}
	}

	// SIGTERM (the context): serve returns, and nothing of it listens on.
	cancel()
	stopped = true
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("serve after its context ended: %v", err)
		}
	case <-time.After(time.Minute): // generous: only a hang fails
		t.Fatal("serve did not return within a minute of its context ending")
	}
	for _, p := range []int{port, metricsPort} {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			c.Close()
			t.Errorf("port %d still listens after serve returned", p)
		}
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestOptionsFileAndFlags(t *testing.T) {
	f := t.TempDir() + "/config.yaml"
	os.WriteFile(f, []byte("partition: gpu\nslurmrestdURL: http://x:6820\nslurmTokenFile: /t\nfetchURL: http://f\nfetchTokenFile: /ft\nsharedRoot: /s\nruntime: none\nstatusInterval: 2s\nclientCA: /ca\n"), 0o644)
	o, err := parseOptions([]string{"-config", f, "-runtime", "podman"})
	if err != nil {
		t.Fatal(err)
	}
	if o.Partition != "gpu" || o.Runtime != "podman" || o.Listen != ":10250" || o.StatusInterval.Duration != 2*time.Second {
		t.Errorf("partition %q (file), runtime %q (flag wins), listen %q (default), status interval %v (file)", o.Partition, o.Runtime, o.Listen, o.StatusInterval)
	}
	os.WriteFile(f, []byte("partitoin: typo\n"), 0o644)
	if _, err := parseOptions([]string{"-config", f}); err == nil || !strings.Contains(err.Error(), "partitoin") {
		t.Errorf("unknown key: %v", err)
	}
	if _, err := parseOptions(nil); err == nil || !strings.Contains(err.Error(), "-partition") {
		t.Errorf("missing options: %v", err)
	}
}

// TestKubeletAPISecureByDefault: without -client-ca the kubelet API would
// answer anyone, so slurm-vk refuses to start unless told it is meant.
func TestKubeletAPISecureByDefault(t *testing.T) {
	base := []string{"-partition", "p", "-slurmrestd-url", "http://x", "-slurm-token-file", "/t", "-fetch-url", "http://f",
		"-fetch-token-file", "/ft", "-shared-root", "/s"}
	if _, err := parseOptions(base); err == nil || !strings.Contains(err.Error(), "-client-ca") || !strings.Contains(err.Error(), "-insecure-kubelet-api") {
		t.Errorf("no -client-ca: %v, want an error naming -client-ca and -insecure-kubelet-api", err)
	}
	if o, err := parseOptions(append(base, "-insecure-kubelet-api")); err != nil || !o.InsecureKubeletAPI {
		t.Errorf("-insecure-kubelet-api: %v", err)
	}
}

func TestNodeLabelsAndTaints(t *testing.T) {
	base := []string{"-partition", "p", "-slurmrestd-url", "http://x", "-slurm-token-file", "/t", "-fetch-url", "http://f",
		"-fetch-token-file", "/ft", "-shared-root", "/s", "-client-ca", "/ca"}
	o, err := parseOptions(append(base, "-node-labels", "a=1, example.com/b=", "-node-taints", "gpu=yes:NoSchedule,drain:NoExecute"))
	if err != nil {
		t.Fatal(err)
	}
	if len(o.labels) != 2 || o.labels["a"] != "1" || o.labels["example.com/b"] != "" {
		t.Errorf("labels %v", o.labels)
	}
	want := []corev1.Taint{{Key: "gpu", Value: "yes", Effect: corev1.TaintEffectNoSchedule}, {Key: "drain", Effect: corev1.TaintEffectNoExecute}}
	if fmt.Sprint(o.taints) != fmt.Sprint(want) {
		t.Errorf("taints %v, want %v", o.taints, want)
	}
	for _, bad := range [][]string{
		{"-node-labels", "novalue"}, {"-node-labels", "bad key=1"}, {"-node-labels", "a=" + strings.Repeat("x", 64)},
		{"-node-taints", "gpu=yes"}, {"-node-taints", "gpu:Sometimes"}, {"-node-taints", "-x:NoSchedule"}, {"-queue-factor", "0.5"},
		{"-allowed-options", "nice,account"}, {"-allowed-options", "script"},
	} {
		if _, err := parseOptions(append(base, bad...)); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}
