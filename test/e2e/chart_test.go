package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/test/helmbin"
)

const (
	chartNS   = "slurm-system"
	chartNode = "slurm-chart"
)

// TestChart installs the chart with helm, then runs slurm-vk the way the
// chart's Deployment would on a kubelet (this control plane has no real
// nodes to run it): its args, its config file, its Secret and ConfigMap
// mounts and its ServiceAccount's token, nothing else. The node registers,
// a pod runs and its logs come back through the API server; so the chart's
// configuration and RBAC suffice. kubectl auth can-i then shows what that
// identity may not do.
func TestChart(t *testing.T) {
	h := helmbin.Path(t, os.Getenv("SLURM_E2E_REQUIRED") == "1")
	c := setupSlurmSide(t)
	kubeletTLS := "kubelet-serving"
	if out, err := c.kubectl("create", "namespace", chartNS); err != nil && !strings.Contains(err.Error(), "AlreadyExists") {
		t.Fatal(out, err)
	}
	// The strictest Pod Security level: the chart's pods must be admitted.
	c.must("label", "namespace", chartNS, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
	t.Cleanup(func() {
		c.kubectl("delete", "namespace", chartNS, "--wait=false")
		c.kubectl("delete", "node", chartNode, "--ignore-not-found")
		c.kubectl("-n", "kube-node-lease", "delete", "lease", chartNode, "--ignore-not-found")
	})
	c.kubectl("-n", chartNS, "delete", "secret", kubeletTLS, "--ignore-not-found")
	c.must("-n", chartNS, "create", "secret", "tls", kubeletTLS, "--cert", c.cp["CONTROLPLANE_KUBELET_CERT"], "--key", c.cp["CONTROLPLANE_KUBELET_KEY"])

	helm := func(args ...string) string {
		t.Helper()
		out, err := runCmd(h, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
		if err != nil {
			t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	c.clearNode(chartNode)
	c.kubectl("delete", "node", chartNode, "--ignore-not-found")
	runCmd(h, "--kubeconfig", c.kubeconfig, "-n", chartNS, "uninstall", "slurm-vk", "--wait")
	notes := helm("install", "slurm-vk", "../../charts/slurm-vk", "-n", chartNS,
		"--set", "partitions[0].name="+c.lab.Partition, "--set", "partitions[0].nodeName="+chartNode,
		"--set", `partitions[0].labels.site\.example/tier=e2e`,
		"--set", "slurmrestd.url="+c.lab.URL, "--set", "slurmrestd.user="+c.lab.User,
		"--set-file", "slurmrestd.token.value="+c.lab.TokenFile,
		"--set", "fetch.url=http://"+c.fetchdAddr, "--set-file", "fetch.token.value="+c.tokenFile,
		"--set", "fetch.sharedRoot="+c.root, "--set", "runtime=none", "--set", "statusInterval=1s",
		"--set", "kubelet.tls.existingSecret="+kubeletTLS, "--set", "node.queueFactor=2")
	t.Cleanup(func() { runCmd(h, "--kubeconfig", c.kubeconfig, "-n", chartNS, "uninstall", "slurm-vk") })
	if !strings.Contains(notes, "kubectl logs -f hello-slurm") || !strings.Contains(notes, chartNode) {
		t.Errorf("install notes lack the next steps:\n%s", notes)
	}
	for _, obj := range []string{"deployment/slurm-vk-" + c.lab.Partition, "configmap/slurm-vk-" + c.lab.Partition,
		"serviceaccount/slurm-vk", "secret/slurm-vk-slurmrestd", "secret/slurm-vk-fetch"} {
		c.must("-n", chartNS, "get", obj)
	}
	c.must("get", "clusterrole/slurm-vk", "clusterrolebinding/slurm-vk")
	c.must("-n", "kube-node-lease", "get", "role/slurm-vk", "rolebinding/slurm-vk")

	// No kubelet runs it here, but the ReplicaSet's pod must exist: Pod
	// Security admission ("restricted") would have refused it.
	c.waitFor("the Deployment's pod to be admitted", time.Minute, func() bool {
		out, _ := c.kubectl("-n", chartNS, "get", "pods", "-l", "app.kubernetes.io/instance=slurm-vk", "-o", "name")
		return out != ""
	})

	args := c.podFromDeployment(t, "slurm-vk-"+c.lab.Partition, "slurm-vk")
	metrics := freeAddr(t)
	// Only where the pod would listen changes: loopback, not every interface.
	start(t, c.bin, "slurm-vk", append(args, "-listen", "127.0.0.1:10250", "-metrics-listen", metrics)...)
	c.waitReady(chartNode)
	if tier := c.must("get", "node", chartNode, "-o", `jsonpath={.metadata.labels.site\.example/tier}`); tier != "e2e" {
		t.Errorf("node label site.example/tier = %q", tier)
	}

	t.Run("a pod runs, logs come back through the API server", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "charted")
		c.apply(podOn(chartNode, name, "echo from the chart; echo line 2"))
		c.waitFor("Succeeded", 2*time.Minute, func() bool { return c.phase(name) == "Succeeded" })
		if logs := c.must("logs", name); logs != "from the chart\nline 2" {
			t.Errorf("logs %q", logs)
		}
	})
	t.Run("a deleted pod is cancelled and removed", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "charted-sleep")
		c.apply(podOn(chartNode, name, "sleep 600"))
		c.waitFor("Running", 2*time.Minute, func() bool { return c.phase(name) == "Running" })
		uid := c.must("get", "pod", name, "-o", "jsonpath={.metadata.uid}")
		c.must("delete", "pod", name, "--wait=true", "--timeout=90s")
		// A job of `sleep 600` that has ended within the minute ended
		// because of the delete: SIGTERM (FAILED, 143) or the cancel.
		c.waitFor("the job to end in Slurm", time.Minute, func() bool {
			return c.slurmJob(uid).State.Terminal()
		})
	})
	t.Run("queueFactor 2: a second whole-partition pod waits in Slurm's queue, not Kubernetes'", func(t *testing.T) {
		c.t = t
		cpus := fmt.Sprintf("    resources:\n      requests:\n        cpu: %d\n    command:", c.lab.CPUs)
		first, second := c.unique(t, "whole-1"), c.unique(t, "whole-2")
		c.apply(strings.Replace(podOn(chartNode, first, "sleep 120"), "    command:", cpus, 1))
		c.waitFor("the first Running", 2*time.Minute, func() bool { return c.phase(first) == "Running" })
		c.apply(strings.Replace(podOn(chartNode, second, "true"), "    command:", cpus, 1))
		c.waitFor("the second to wait in Slurm with its reason", 2*time.Minute, func() bool {
			out, _ := c.kubectl("get", "pod", second, "-o", `jsonpath={.spec.nodeName} {.status.containerStatuses[0].state.waiting.reason}`)
			return out == chartNode+" Resources"
		})
	})
	t.Run("the provider was never refused by the API server", func(t *testing.T) {
		b, err := os.ReadFile(filepath.Join(c.bin, "slurm-vk.log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "forbidden") || strings.Contains(line, "Forbidden") {
				t.Errorf("slurm-vk was refused: %.400s", line)
			}
		}
	})
	t.Run("kubectl auth can-i: what the chart's identity may and may not do", func(t *testing.T) {
		c.t = t
		as := fmt.Sprintf("--as=system:serviceaccount:%s:slurm-vk", chartNS)
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"patch", "nodes/" + chartNode}, "yes"},
			{[]string{"patch", "nodes/" + chartNode, "--subresource=status"}, "yes"},
			{[]string{"update", "leases/" + chartNode, "-n", "kube-node-lease"}, "yes"},
			{[]string{"delete", "pods", "-A"}, "yes"},
			{[]string{"delete", "nodes/" + chartNode}, "no"},
			{[]string{"delete", "nodes"}, "no"},
			{[]string{"patch", "nodes/" + nodeName}, "no"}, // another virtual node
			{[]string{"get", "nodes"}, "no"},
			{[]string{"get", "nodes/" + chartNode, "--subresource=proxy"}, "no"},
			{[]string{"update", "leases/" + nodeName, "-n", "kube-node-lease"}, "no"},
			{[]string{"delete", "leases", "-n", "kube-node-lease"}, "no"},
			{[]string{"create", "secrets", "-n", chartNS}, "no"},
			{[]string{"update", "secrets", "-A"}, "no"},
			{[]string{"delete", "configmaps", "-A"}, "no"},
			{[]string{"create", "pods", "-A"}, "no"},
			{[]string{"create", "pods/exec", "-A"}, "no"},
			{[]string{"create", "clusterrolebindings"}, "no"},
			{[]string{"create", "serviceaccounts/token", "-n", chartNS}, "no"},
			{[]string{"list", "namespaces"}, "no"},
		} {
			out, _ := c.kubectl(append([]string{"auth", "can-i", as}, tc.args...)...)
			if out != tc.want {
				t.Errorf("can-i %s: %q, want %q", strings.Join(tc.args, " "), out, tc.want)
			}
		}
	})
}

// podFromDeployment does for a Deployment's pod what a kubelet would: it
// writes its Secret and ConfigMap volumes under a directory standing for
// the container's file system, gets its ServiceAccount a token, and
// returns the container's args with paths and $(POD_IP) resolved, plus a
// kubeconfig carrying that token (in place of the in-cluster config).
func (c *cluster) podFromDeployment(t *testing.T, name, container string) []string {
	var d appsv1.Deployment
	if err := json.Unmarshal([]byte(c.must("-n", chartNS, "get", "deployment", name, "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	fsRoot := t.TempDir()
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	var ctr *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == container {
			ctr = &spec.Containers[i]
		}
	}
	if ctr == nil {
		t.Fatalf("deployment %s has no container %s", name, container)
	}
	var mounts []string
	for _, m := range ctr.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Fatalf("mount %s: no volume", m.Name)
		}
		files := c.volumeFiles(t, v)
		dir := filepath.Join(fsRoot, m.MountPath)
		os.MkdirAll(dir, 0o755)
		for f, data := range files {
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		mounts = append(mounts, m.MountPath)
	}
	// Paths inside the container live under fsRoot here.
	relocate := func(s string) string {
		for _, m := range mounts {
			s = strings.ReplaceAll(s, m+"/", filepath.Join(fsRoot, m)+"/")
		}
		return s
	}
	for _, m := range mounts {
		dir := filepath.Join(fsRoot, m)
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".yaml") {
				p := filepath.Join(dir, e.Name())
				b, _ := os.ReadFile(p)
				os.WriteFile(p, []byte(relocate(string(b))), 0o600)
			}
		}
	}
	sa := spec.ServiceAccountName
	token := c.must("-n", chartNS, "create", "token", sa, "--duration=1h")
	server := c.must("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}")
	kubeconfig := filepath.Join(fsRoot, "kubeconfig")
	os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: %q, certificate-authority: %q}}]
users: [{name: %s, user: {token: %q}}]
contexts: [{name: e2e, context: {cluster: e2e, user: %s}}]
current-context: e2e
`, server, c.cp["CONTROLPLANE_CA"], sa, token, sa)), 0o600)

	var args []string
	for _, a := range ctr.Args {
		a = strings.ReplaceAll(a, "$(POD_IP)", "127.0.0.1")
		args = append(args, relocate(a))
	}
	return append(args, "-kubeconfig", kubeconfig)
}

// volumeFiles reads what a Secret or ConfigMap volume would hold, honouring
// items; the chart uses no other kind.
func (c *cluster) volumeFiles(t *testing.T, v corev1.Volume) map[string][]byte {
	var data map[string][]byte
	var items []corev1.KeyToPath
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	switch {
	case v.Secret != nil:
		var s corev1.Secret
		if err := json.Unmarshal([]byte(c.must("-n", chartNS, "get", "secret", v.Secret.SecretName, "-o", "json")), &s); err != nil {
			t.Fatal(err)
		}
		data, items = s.Data, v.Secret.Items
	case v.ConfigMap != nil:
		var cm corev1.ConfigMap
		// kube-root-ca.crt is published by the controller manager shortly
		// after the namespace is made.
		for ctx.Err() == nil {
			out, err := c.kubectl("-n", chartNS, "get", "configmap", v.ConfigMap.Name, "-o", "json")
			if err == nil {
				if err := json.Unmarshal([]byte(out), &cm); err != nil {
					t.Fatal(err)
				}
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		data = map[string][]byte{}
		for k, s := range cm.Data {
			data[k] = []byte(s)
		}
		items = v.ConfigMap.Items
	default:
		t.Fatalf("volume %s: only Secret and ConfigMap volumes are simulated", v.Name)
	}
	if len(data) == 0 {
		t.Fatalf("volume %s: no data", v.Name)
	}
	if len(items) == 0 {
		return data
	}
	out := map[string][]byte{}
	for _, it := range items {
		b, ok := data[it.Key]
		if !ok {
			t.Fatalf("volume %s: no key %s", v.Name, it.Key)
		}
		out[it.Path] = b
	}
	return out
}

// runCmd runs a command; on failure the error carries its stderr.
func runCmd(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return string(out), nil
}
