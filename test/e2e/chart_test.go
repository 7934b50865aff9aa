package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/test/helmbin"
)

const (
	chartNS   = "slurm-system"
	chartNode = "slurm-chart"
)

// TestChart builds the provider image (make image) and pushes it to the
// lab's registry, installs the chart with helm to use it, then runs the
// chart's Deployment's pod the way a kubelet would (this control plane has
// no real nodes to run it): its image under the lab's rootless podman, its
// args, its config file, its Secret and ConfigMap mounts and its
// ServiceAccount's token, nothing else. The node registers,
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
	repo, digest := c.pushImage(t)
	chart, ca := c.pushChart(t)
	notes := helm("install", "slurm-vk", chart, "--ca-file", ca, "-n", chartNS,
		"--set", "image.repository="+repo, "--set", "image.tag="+imageTag, "--set", "image.pullPolicy=Always",
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

	deployment := "slurm-vk-" + c.lab.Partition
	// Only where the pod would listen changes: loopback, not every interface.
	extra := []string{"-listen", "127.0.0.1:10250", "-metrics-listen", freeAddr(t)}
	provider := c.runDeploymentPod(t, deployment, "slurm-vk", extra...)
	podman := provider.podman
	c.waitReady(chartNode)
	if tier := c.must("get", "node", chartNode, "-o", `jsonpath={.metadata.labels.site\.example/tier}`); tier != "e2e" {
		t.Errorf("node label site.example/tier = %q", tier)
	}

	t.Run("the provider is the image make image built, as user 65532", func(t *testing.T) {
		c.t = t
		ctr := "slurm-vk-e2e-" + c.lab.Suite
		if got := podman("inspect", "--format", "{{.ImageDigest}} {{.State.Running}} {{.Config.User}}", ctr); got != digest+" true 65532:65532" {
			t.Errorf("podman inspect %s: %q, want %q", ctr, got, digest+" true 65532:65532")
		}
	})
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
	t.Run("helm test: a pod on the virtual node runs as a Slurm job", func(t *testing.T) {
		c.t = t
		out := helm("test", "slurm-vk", "-n", chartNS, "--timeout", "2m", "--logs")
		if !strings.Contains(out, "slurm-vk-"+c.lab.Partition+"-test") || !strings.Contains(out, "Succeeded") ||
			!strings.Contains(out, "this pod ran as Slurm job") {
			t.Errorf("helm test:\n%s", out)
		}
	})
	t.Run("helm upgrade from the registry: the Deployment rolls, the node stays Ready, a running pod runs on", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "across-upgrade")
		c.apply(podOn(chartNode, name, "echo before; sleep 600"))
		c.waitFor("Running", 2*time.Minute, func() bool { return c.phase(name) == "Running" })
		uid := c.must("get", "pod", name, "-o", "jsonpath={.metadata.uid}")
		job := c.slurmJob(uid).ID
		ready := func() string {
			return c.must("get", "node", chartNode, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.conditions[?(@.type=="Ready")].lastTransitionTime}`)
		}
		before, template := ready(), c.must("-n", chartNS, "get", "deployment", deployment, "-o", "jsonpath={.spec.template.metadata.annotations.checksum/config}")
		// A values change: a new config, so a new pod template.
		helm("upgrade", "slurm-vk", chart, "--ca-file", ca, "-n", chartNS, "--reuse-values", "--set", "statusInterval=2s")
		if after := c.must("-n", chartNS, "get", "deployment", deployment, "-o", "jsonpath={.spec.template.metadata.annotations.checksum/config}"); after == template {
			t.Fatalf("the upgrade left the pod template's config checksum at %s", after)
		}
		// What the kubelet does when the ReplicaSet replaces the pod
		// (strategy Recreate): stop the old, start the new.
		provider.stop()
		provider = c.runDeploymentPod(t, deployment, "slurm-vk", extra...)
		if cfg := c.must("-n", chartNS, "get", "configmap", deployment, "-o", "jsonpath={.data.config\\.yaml}"); !strings.Contains(cfg, "statusInterval: 2s") {
			t.Errorf("the new pod's config does not have the new statusInterval:\n%s", cfg)
		}
		c.waitFor("the new provider to report the pod", time.Minute, func() bool {
			logs, _ := c.kubectl("logs", name)
			return logs == "before"
		})
		if after := ready(); after != before || !strings.HasPrefix(after, "True ") {
			t.Errorf("node Ready %q before the upgrade, %q after: want True throughout", before, after)
		}
		if j := c.slurmJob(uid); j.ID != job || j.State != slurmclient.StateRunning || c.phase(name) != "Running" {
			t.Errorf("after the upgrade: job %d %s, pod %s; want job %d still RUNNING and the pod Running", j.ID, j.State, c.phase(name), job)
		}
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

// imageTag is the tag of the provider image the e2e builds.
const imageTag = "e2e"

// pushImage builds the provider image as make image does (in Go, the
// same target) and pushes it to the lab's registry; it returns the
// repository and the image's digest.
func (c *cluster) pushImage(t *testing.T) (repo, digest string) {
	repo = c.lab.Registry + "/slurm-vk/slurm-vk"
	cmd := exec.Command("make", "--no-print-directory", "image", "IMAGE_PUSH="+repo+":"+imageTag,
		"IMAGE_CA="+filepath.Join(filepath.Dir(c.lab.Rootfs), "state", "registry-tls", "ca.crt"))
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "sha256:") {
		t.Fatalf("make image printed no digest: %s", out)
	}
	return repo, lines[len(lines)-1]
}

// runDeploymentPod does for a Deployment's pod what a kubelet would, with
// the lab's rootless podman as the container runtime: it writes the pod's
// Secret and ConfigMap volumes to files and mounts them at their
// mountPath, gives the pod its ServiceAccount's token where in-cluster
// clients look for it, and runs the container's image with its args
// ($(POD_IP) resolved), env and security context; extra args follow. The
// container's output goes to c.bin/<container>.log.
func (c *cluster) runDeploymentPod(t *testing.T, name, container string, extra ...string) *podmanPod {
	var d appsv1.Deployment
	if err := json.Unmarshal([]byte(c.must("-n", chartNS, "get", "deployment", name, "-o", "json")), &d); err != nil {
		t.Fatal(err)
	}
	spec := d.Spec.Template.Spec
	var ctr *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == container {
			ctr = &spec.Containers[i]
		}
	}
	if ctr == nil {
		t.Fatalf("deployment %s has no container %s", name, container)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	// The pod's files, where the lab's mount namespace sees them too.
	root, err := os.MkdirTemp(c.lab.Shared, "chart-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o711)
	// The container's user (65532) is the job user on the host
	// (--userns=keep-id), as fsGroup would make the files its own.
	write := func(dir string, files map[string][]byte) {
		os.MkdirAll(dir, 0o700)
		os.Chown(dir, c.lab.UID, c.lab.UID)
		for f, data := range files {
			p := filepath.Join(dir, f)
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			os.Chown(p, c.lab.UID, c.lab.UID)
		}
	}
	run := []string{"run", "--rm", "--name", "slurm-vk-e2e-" + c.lab.Suite, "--pull=always", "--network=host",
		"--userns=keep-id:uid=65532,gid=65532"}
	for _, m := range ctr.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Fatalf("mount %s: no volume", m.Name)
		}
		dir := filepath.Join(root, m.Name)
		write(dir, c.volumeFiles(t, v))
		run = append(run, "--volume", dir+":"+m.MountPath+":ro")
	}
	ca, err := os.ReadFile(c.cp["CONTROLPLANE_CA"])
	if err != nil {
		t.Fatal(err)
	}
	sa := filepath.Join(root, "serviceaccount")
	write(sa, map[string][]byte{
		"token":     []byte(c.must("-n", chartNS, "create", "token", spec.ServiceAccountName, "--duration=1h")),
		"ca.crt":    ca,
		"namespace": []byte(chartNS),
	})
	run = append(run, "--volume", sa+":/var/run/secrets/kubernetes.io/serviceaccount:ro")
	server, err := url.Parse(c.must("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}"))
	if err != nil {
		t.Fatal(err)
	}
	run = append(run, "--env", "KUBERNETES_SERVICE_HOST="+server.Hostname(), "--env", "KUBERNETES_SERVICE_PORT="+server.Port())
	for _, e := range ctr.Env {
		if e.ValueFrom == nil {
			run = append(run, "--env", e.Name+"="+e.Value)
		}
	}
	if sc := ctr.SecurityContext; sc != nil {
		if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			run = append(run, "--read-only")
		}
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			run = append(run, "--security-opt=no-new-privileges")
		}
		if sc.Capabilities != nil && len(sc.Capabilities.Drop) == 1 && sc.Capabilities.Drop[0] == "ALL" {
			run = append(run, "--cap-drop=all")
		}
	}
	if psc := spec.SecurityContext; psc != nil && psc.RunAsUser != nil {
		run = append(run, "--user", fmt.Sprintf("%d:%d", *psc.RunAsUser, *psc.RunAsUser))
	}
	run = append(run, ctr.Image)
	for _, a := range ctr.Args {
		run = append(run, strings.ReplaceAll(a, "$(POD_IP)", "127.0.0.1"))
	}
	run = append(run, extra...)

	// podman as the job user in the lab's mount namespace, as a job runs
	// it; setpriv and env exec, so the process started is podman, which
	// passes SIGINT on to the container.
	asUser := []string{"-t", c.labNS(t), "-m", "--", "setpriv", "--reuid", fmt.Sprint(c.lab.UID), "--regid", fmt.Sprint(c.lab.UID), "--init-groups",
		"env", "-i", "HOME=/home/" + c.lab.User, fmt.Sprintf("XDG_RUNTIME_DIR=/run/user/%d", c.lab.UID), "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"PODMAN_IGNORE_CGROUPSV1_WARNING=1", "podman"}
	logf, err := os.OpenFile(filepath.Join(c.bin, container+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append(asUser, run...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &podmanPod{podman: func(args ...string) string {
		out, err := exec.Command("nsenter", append(asUser, args...)...).Output()
		if err != nil {
			t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}}
	p.stop = sync.OnceFunc(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
		}
		exec.Command("nsenter", append(asUser, "rm", "-f", "slurm-vk-e2e-"+c.lab.Suite)...).Run()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s (podman) log (tail)\n%s", container, b)
		}
	})
	t.Cleanup(p.stop)
	return p
}

// podmanPod is a Deployment's pod run by runDeploymentPod: podman runs a
// podman command as the job user, stop ends the pod (SIGINT, as a kubelet's
// SIGTERM: the provider shuts down gracefully) and removes its container.
type podmanPod struct {
	podman func(args ...string) string
	stop   func()
}

// pushChart packages the chart and pushes it to the lab's registry as
// make chart-push does (the same target); it returns the chart's oci://
// reference and the registry's CA for helm.
func (c *cluster) pushChart(t *testing.T) (ref, ca string) {
	ca = filepath.Join(filepath.Dir(c.lab.Rootfs), "state", "registry-tls", "ca.crt")
	cmd := exec.Command("make", "--no-print-directory", "chart-push", "CHART_REGISTRY="+c.lab.Registry+"/charts", "CHART_CA="+ca)
	cmd.Dir = "../.."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make chart-push: %v\n%s", err, out)
	}
	return "oci://" + c.lab.Registry + "/charts/slurm-vk", ca
}

// labNS is the PID of the lab's mount namespace holder (hack/lab's labns).
func (c *cluster) labNS(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(c.lab.Rootfs), "state", "labns.pid"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
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
