// Package e2e drives the whole chain the way a user does, with kubectl:
// a real control plane (hack/controlplane), the Slurm lab, and the
// slurm-fetchd and slurm-vk binaries started by this test.
//
// It needs CONTROLPLANE_ENV (.cache/controlplane/env) and SLURM_LAB_ENV;
// without them it skips (fails with SLURM_E2E_REQUIRED=1).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/internal/testbin"
	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/test/labenv"
)

const nodeName = "slurm-debug"

type cluster struct {
	t          *testing.T
	top        *testing.T // the test that owns the processes
	kubeconfig string
	cp         map[string]string // CONTROLPLANE_ENV
	lab        *labenv.Lab
	fetchdAddr string
	fetchd     *proc
	tokenFile  string
	root       string
	bin        string
	fetchdArgs []string

	adminClient *slurmclient.Client
}

func readEnv(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok && !strings.HasPrefix(k, "#") {
			kv[k] = v
		}
	}
	return kv, nil
}

// build puts the command's binary, built once per run (testbin), into dir.
func build(t *testing.T, dir, name string) string {
	out := filepath.Join(dir, name)
	if err := os.Symlink(testbin.Path(t, name), out); err != nil {
		t.Fatal(err)
	}
	return out
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a binary a test started; done closes once it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// kill ends it with SIGKILL and waits for it.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// start runs a binary until the test ends, logging to a file in dir.
func start(t *testing.T, dir, name string, args ...string) *proc {
	return startLogged(t, dir, name, nil, args...)
}

// startLogged is start; with tee set, the binary's stderr also goes
// there, and tee is closed once the binary has exited.
func startLogged(t *testing.T, dir, name string, tee io.WriteCloser, args ...string) *proc {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if tee != nil {
		cmd.Stderr = io.MultiWriter(logf, tee)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { // the one Wait
		cmd.Wait()
		if tee != nil {
			tee.Close()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-p.done // its port and files are free before the next test
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 6000 {
				b = b[len(b)-6000:]
			}
			t.Logf("--- %s log (tail)\n%s", name, b)
		}
	})
	return p
}

// startFetchd starts slurm-fetchd with c.fetchdArgs: the first time on a
// port the kernel picks, read back from its log (c.fetchdAddr), later
// (restarts) on that same address, which the provider keeps calling.
func (c *cluster) startFetchd(t *testing.T) {
	t.Helper()
	listen := c.fetchdAddr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	pr, pw := io.Pipe()
	listening := fetchtest.Listening(pr)
	p := startLogged(t, c.bin, "slurm-fetchd", pw, append([]string{"-listen", listen}, c.fetchdArgs...)...)
	select {
	case addr, ok := <-listening:
		if !ok {
			t.Fatalf("slurm-fetchd -listen %s ended before it listened (see its log)", listen)
		}
		c.fetchdAddr, c.fetchd = addr, p
	case <-time.After(time.Minute): // only a wedged machine takes this long
		t.Fatalf("slurm-fetchd -listen %s did not listen within a minute", listen)
	}
}

// setup brings up the Slurm side (slurm-fetchd on a fresh root in the lab's
// shared directory) and a slurm-vk for nodeName with the e2e provider
// identity, and waits for its node to be Ready.
func setup(t *testing.T, extra ...string) *cluster {
	c := setupSlurmSide(t)
	c.clearNode(nodeName)
	// Registered anew, with this test's flags: a node object an earlier
	// test left keeps its taints (-no-provider-taint would not take).
	if _, err := c.kubectl("delete", "node", nodeName, "--ignore-not-found"); err != nil {
		t.Fatal(err)
	}
	args := []string{"-kubeconfig", c.cp["CONTROLPLANE_PROVIDER_KUBECONFIG"], "-node-name", nodeName,
		"-partition", c.lab.Partition, "-slurmrestd-url", c.lab.URL, "-slurm-token-file", c.lab.TokenFile, "-slurm-user", c.lab.User,
		"-fetch-url", "http://" + c.fetchdAddr, "-fetch-token-file", c.tokenFile, "-shared-root", c.root, "-runtime", "none",
		"-allowed-runtimes", "podman,charliecloud", "-listen", "127.0.0.1:10250", "-node-ip", "127.0.0.1", "-tls-cert", c.cp["CONTROLPLANE_KUBELET_CERT"],
		"-tls-key", c.cp["CONTROLPLANE_KUBELET_KEY"], "-client-ca", c.cp["CONTROLPLANE_CA"], "-status-interval", "1s"}
	args = append(args, extra...)
	start(t, c.bin, "slurm-vk", args...)
	c.waitReady(nodeName)
	return c
}

// requireEnv returns the control plane's env file and the lab, or skips
// the test (fails it with SLURM_E2E_REQUIRED=1) without them.
func requireEnv(t *testing.T) (string, *labenv.Lab) {
	cpEnv := os.Getenv("CONTROLPLANE_ENV")
	if cpEnv == "" {
		if os.Getenv("SLURM_E2E_REQUIRED") == "1" {
			t.Fatal("SLURM_E2E_REQUIRED=1 but CONTROLPLANE_ENV is not set")
		}
		t.Skip("no control plane: run hack/controlplane/up.sh and set CONTROLPLANE_ENV=.cache/controlplane/env")
	}
	return cpEnv, labenv.Require(t)
}

// setupSlurmSide builds the binaries and starts slurm-fetchd; no node yet.
func setupSlurmSide(t *testing.T) *cluster {
	cpEnv, lab := requireEnv(t)
	cp, err := readEnv(cpEnv)
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build(t, bin, "slurm-fetchd")
	build(t, bin, "slurm-vk")

	root, err := os.MkdirTemp(lab.Shared, "e2e-")
	if err != nil {
		t.Fatal(err)
	}
	// As a site sets it up: root's, 0711 (jobs pass through to their own
	// pod directories only).
	os.Chmod(root, 0o711)
	t.Cleanup(func() { os.RemoveAll(root) })
	c := &cluster{t: t, top: t, kubeconfig: cp["KUBECONFIG"], cp: cp, lab: lab, root: root,
		tokenFile: filepath.Join(bin, "fetch-token")}
	os.WriteFile(c.tokenFile, []byte("e2e-fetch-token"), 0o600)
	uid := fmt.Sprint(lab.UID)
	c.bin = bin
	c.fetchdArgs = []string{"-root", root, "-token-file", c.tokenFile,
		"-uid", uid, "-gid", uid, "-poll-interval", "200ms",
		"-users", fmt.Sprintf("%s=%d:%d,%s=%d:%d", lab.User, lab.UID, lab.UID, lab.User2, lab.UID2, lab.UID2)}
	c.startFetchd(t)
	return c
}

// stopFile drops a file named stop into the directory of a pod's
// container (its working directory under runtime none), which the pod's
// script waits for.
func (c *cluster) stopFile(t *testing.T, pod, container string) {
	t.Helper()
	uid := c.must("get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	dir := filepath.Join(c.root, layout.Pod{Namespace: "default", Name: pod, UID: uid}.Dir(), container)
	if err := os.WriteFile(filepath.Join(dir, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// clearNode removes pods left bound to a node by an earlier run on this
// control plane (make demo uses the same node name): they would hold the
// node's capacity in the scheduler's books. Their Slurm jobs are cancelled
// by the provider's recovery when it starts.
func (c *cluster) clearNode(node string) {
	c.t.Helper()
	out, err := c.kubectl("delete", "pods", "-A", "--field-selector", "spec.nodeName="+node, "--grace-period=0", "--force", "--ignore-not-found")
	if err != nil {
		c.t.Fatal(err)
	}
	if strings.Contains(out, "deleted") {
		c.t.Logf("removed pods left on %s:\n%s", node, out)
	}
}

func (c *cluster) waitReady(node string) {
	c.t.Helper()
	c.waitFor("node "+node+" to be Ready", 2*time.Minute, func() bool {
		out, err := c.kubectl("get", "node", node, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True"
	})
}

// kubectl runs kubectl as the admin user and returns its trimmed stdout.
func (c *cluster) kubectl(args ...string) (string, error) {
	cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return strings.TrimSpace(string(out)), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

func (c *cluster) must(args ...string) string {
	c.t.Helper()
	out, err := c.kubectl(args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

func (c *cluster) apply(manifest string) {
	c.t.Helper()
	cmd := exec.Command("kubectl", "--kubeconfig", c.kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("kubectl apply: %v: %s", err, out)
	}
}

func (c *cluster) waitFor(what string, d time.Duration, ok func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (c *cluster) phase(pod string) string {
	out, _ := c.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}")
	return out
}

// pod is a pod manifest that tolerates the provider's taint and selects
// the virtual node; the real scheduler binds it.
func pod(name, script string) string { return podOn(nodeName, name, script) }

func podOn(node, name, script string) string {
	return podWith(node, name, fmt.Sprintf(`  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: none
    command: ["/bin/sh", "-c", %q]
`, script))
}

// podWith is a pod on node that tolerates the provider's taint and never
// restarts; spec holds the rest of its spec, indented two spaces.
func podWith(node, name, spec string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  nodeSelector:
    kubernetes.io/hostname: %s
  tolerations:
  - key: virtual-kubelet.io/provider
    operator: Equal
    value: slurm
    effect: NoSchedule
  restartPolicy: Never
`, name, node) + spec
}

// job applies a batch/v1 Job on the node, named for this run and deleted
// when the test ends: spec holds its own spec lines (indented two spaces
// after the first), its one container runs script under policy.
func (c *cluster) job(t *testing.T, prefix, spec string, policy, script string) string {
	name := fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()%1000000)
	t.Cleanup(func() { c.kubectl("delete", "job", name, "--wait=false", "--ignore-not-found") })
	c.apply(fmt.Sprintf(`apiVersion: batch/v1
kind: Job
metadata:
  name: %s
spec:
  %s
  template:
    spec:
      nodeSelector:
        kubernetes.io/hostname: %s
      tolerations:
      - key: virtual-kubelet.io/provider
        operator: Exists
      restartPolicy: %s
      containers:
      - name: work
        image: none
        command: ["/bin/sh", "-c", %q]
`, name, spec, nodeName, policy, script))
	return name
}

// unique names a pod for this run and deletes it when the test ends.
func (c *cluster) unique(t *testing.T, name string) string {
	n := fmt.Sprintf("%s-%d", name, time.Now().UnixNano()%1000000)
	t.Cleanup(func() { c.kubectl("delete", "pod", n, "--wait=false", "--ignore-not-found") })
	return n
}

func TestE2E(t *testing.T) {
	c := setup(t)

	t.Run("apply, logs -f as the job prints, Succeeded", func(t *testing.T) {
		c.t = t
		hello := c.unique(t, "hello")
		// The job prints its first line, then waits for the test to have
		// read it: only a stream that delivers lines as they are written
		// gets past the gate (an ordering check, no clock).
		gate := filepath.Join(c.root, "gate-"+hello)
		c.apply(pod(hello, `echo "line 1"; while [ ! -e `+gate+` ]; do sleep 0.2; done; for i in 2 3 4 5; do echo "line $i"; done`))
		c.waitFor("Running", 2*time.Minute, func() bool { return c.phase(hello) == "Running" })
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.kubeconfig, "logs", "-f", hello)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lines []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if len(lines) == 1 {
				if err := os.WriteFile(gate, nil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("kubectl logs -f did not exit cleanly: %v: %s", err, stderr.String())
		}
		if strings.Join(lines, ",") != "line 1,line 2,line 3,line 4,line 5" {
			t.Fatalf("logs -f printed %q", lines)
		}
		c.waitFor("Succeeded", time.Minute, func() bool { return c.phase(hello) == "Succeeded" })
		if code := c.must("get", "pod", hello, "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"); code != "0" {
			t.Errorf("exit code %q", code)
		}
	})

	t.Run("a failing command: Failed with its exit code", func(t *testing.T) {
		c.t = t
		fails := c.unique(t, "fails")
		c.apply(pod(fails, "echo failing; exit 42"))
		c.waitFor("Failed", 2*time.Minute, func() bool { return c.phase(fails) == "Failed" })
		var p struct {
			Status struct {
				ContainerStatuses []struct {
					State struct {
						Terminated struct {
							ExitCode int `json:"exitCode"`
						} `json:"terminated"`
					} `json:"state"`
				} `json:"containerStatuses"`
			} `json:"status"`
		}
		if err := json.Unmarshal([]byte(c.must("get", "pod", fails, "-o", "json")), &p); err != nil {
			t.Fatal(err)
		}
		if code := p.Status.ContainerStatuses[0].State.Terminated.ExitCode; code != 42 {
			t.Errorf("exit code %d, want 42", code)
		}
	})

	t.Run("the kubelet API refuses an anonymous caller", func(t *testing.T) {
		c.t = t
		// Not verifying the server is fine here: what is checked is that the
		// server does not answer a caller without a client certificate.
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		c.waitFor("the kubelet API to listen", time.Minute, func() bool {
			conn, err := net.Dial("tcp", "127.0.0.1:10250")
			if err == nil {
				conn.Close()
			}
			return err == nil
		})
		for _, path := range []string{"/pods", "/containerLogs/default/any/main"} {
			// Refused in the TLS handshake (no client certificate) or with
			// 401/403; a connection error of any other kind proves nothing.
			resp, err := client.Get("https://127.0.0.1:10250" + path)
			if err != nil {
				if !strings.Contains(err.Error(), "certificate required") {
					t.Errorf("anonymous GET %s: %v, want a refusal", path, err)
				}
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
				t.Errorf("anonymous GET %s: %d, want 401 or 403", path, resp.StatusCode)
			}
		}
	})

	t.Run("kubectl delete cancels the Slurm job", func(t *testing.T) {
		c.t = t
		victim := c.unique(t, "victim")
		c.apply(pod(victim, "echo running; sleep 600"))
		c.waitFor("Running", 2*time.Minute, func() bool { return c.phase(victim) == "Running" })
		uid := c.must("get", "pod", victim, "-o", "jsonpath={.metadata.uid}")
		job := c.slurmJob(uid)
		if job.State != slurmclient.StateRunning {
			t.Fatalf("the running pod's job %d is %s", job.ID, job.State)
		}
		c.must("delete", "pod", victim, "--wait=true", "--timeout=90s")
		// The job itself ends in Slurm (read through slurmrestd, every
		// call's status checked): not merely gone from a list.
		// A job of `sleep 600` that has ended within the minute ended
		// because of the delete: SIGTERM (FAILED, 143) or the cancel.
		c.waitFor("the job to end in Slurm", time.Minute, func() bool {
			return c.slurmJob(uid).State.Terminal()
		})
	})
}

func TestE2EMore(t *testing.T) {
	c := setup(t)

	t.Run("a batch/v1 Job with 3 completions", func(t *testing.T) {
		c.t = t
		name := c.job(t, "batch", "completions: 3\n  parallelism: 2\n  backoffLimit: 0", "Never", "echo working; sleep 1")
		c.waitFor("3 completions", 3*time.Minute, func() bool {
			out, _ := c.kubectl("get", "job", name, "-o", "jsonpath={.status.succeeded}")
			return out == "3"
		})
	})

	t.Run("multi-container logs: -c, --all-containers, --tail, --limit-bytes", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "multi")
		c.apply(podWith(nodeName, name, `  containers:
  - name: alpha
    image: none
    command: ["/bin/sh", "-c", "printf 'a1\na2\na3\n'"]
  - name: beta
    image: none
    command: ["/bin/sh", "-c", "printf 'b1\nb2\n'"]
`))
		c.waitFor("Succeeded", 2*time.Minute, func() bool { return c.phase(name) == "Succeeded" })
		for _, tt := range []struct {
			args []string
			want string
		}{
			{[]string{"-c", "alpha"}, "a1\na2\na3"},
			{[]string{"-c", "beta"}, "b1\nb2"},
			{[]string{"-c", "alpha", "--tail=1"}, "a3"},
			{[]string{"-c", "alpha", "--limit-bytes=4"}, "a1\na"},
		} {
			if got := c.must(append([]string{"logs", name}, tt.args...)...); got != tt.want {
				t.Errorf("logs %v: %q, want %q", tt.args, got, tt.want)
			}
		}
		all := c.must("logs", name, "--all-containers")
		if !strings.Contains(all, "a1\na2\na3") || !strings.Contains(all, "b1\nb2") {
			t.Errorf("--all-containers: %q", all)
		}
	})

	t.Run("a pod that cannot fit now: describe shows Slurm's pending reason", func(t *testing.T) {
		c.t = t
		hog := c.unique(t, "hog")
		c.apply(pod(hog, "sleep 60"))
		c.waitFor("the hog Running", 2*time.Minute, func() bool { return c.phase(hog) == "Running" })
		big := c.unique(t, "big")
		c.apply(strings.Replace(pod(big, "true"), "    command:", fmt.Sprintf("    resources:\n      requests:\n        cpu: %d\n    command:", c.lab.CPUs), 1))
		c.waitFor("the container to wait for Slurm's reason", 2*time.Minute, func() bool {
			out, _ := c.kubectl("get", "pod", big, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.reason}")
			return out == "Resources"
		})
		// As describe shows it: the container's state, then Slurm's reason.
		if out := c.must("describe", "pod", big); !regexp.MustCompile(`State:\s+Waiting\s+Reason:\s+Resources`).MatchString(out) {
			t.Errorf("describe does not show the container waiting for Resources:\n%s", out)
		}
	})

	t.Run("a pod no node can hold fails at once, with the numbers; the node shows its largest", func(t *testing.T) {
		c.t = t
		if got := c.must("get", "node", nodeName, "-o", `jsonpath={.metadata.labels.slurm-vk\.io/largest-node-cpus}`); got != fmt.Sprint(c.lab.CPUs) {
			t.Errorf("largest-node-cpus label %q, want %d", got, c.lab.CPUs)
		}
		// Bound to the node directly, as the scheduler would bind it: the
		// partition's two nodes have more CPUs in all than either has.
		huge := c.unique(t, "huge")
		m := strings.Replace(pod(huge, "true"), "    command:", fmt.Sprintf("    resources:\n      requests:\n        cpu: %d\n    command:", c.lab.CPUs+1), 1)
		c.apply(strings.Replace(m, "  nodeSelector:\n    kubernetes.io/hostname: "+nodeName+"\n", "  nodeName: "+nodeName+"\n", 1))
		c.waitFor("Failed", 2*time.Minute, func() bool { return c.phase(huge) == "Failed" })
		if got := c.must("get", "pod", huge, "-o", "jsonpath={.status.reason}: {.status.message}"); !strings.HasPrefix(got, "NoNodeLargeEnough: the pod needs "+fmt.Sprint(c.lab.CPUs+1)+" CPUs") {
			t.Errorf("status %q, want NoNodeLargeEnough with the numbers", got)
		}
	})

	t.Run("logs -f through a restart of the fetch endpoint", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "steady")
		c.apply(pod(name, `for i in $(seq 1 12); do echo "n $i"; sleep 0.5; done`))
		c.waitFor("Running", 2*time.Minute, func() bool { return c.phase(name) == "Running" })
		done := make(chan string, 1)
		go func() {
			out, _ := c.kubectl("logs", "-f", name)
			done <- out
		}()
		time.Sleep(2 * time.Second)
		c.fetchd.kill()
		time.Sleep(1500 * time.Millisecond)
		// Owned by the whole test, not this subtest: later ones need it.
		c.startFetchd(c.top)
		var want []string
		for i := 1; i <= 12; i++ {
			want = append(want, fmt.Sprintf("n %d", i))
		}
		select {
		case got := <-done:
			if got != strings.Join(want, "\n") {
				t.Errorf("logs -f across the restart: %q", got)
			}
		case <-time.After(2 * time.Minute):
			t.Fatal("logs -f did not end")
		}
	})

	t.Run("a ConfigMap and a Secret mounted into a pod", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "mounts")
		c.apply(`apiVersion: v1
kind: ConfigMap
metadata:
  name: e2e-config
data:
  greeting: hello from a configmap
---
apiVersion: v1
kind: Secret
metadata:
  name: e2e-secret
stringData:
  password: s3cr3t-e2e
`)
		c.apply(podWith(nodeName, name, `  volumes:
  - name: config
    configMap:
      name: e2e-config
  - name: secret
    secret:
      secretName: e2e-secret
  containers:
  - name: main
    image: none
    command: ["/bin/sh", "-c", "cat $SLURM_VK_MOUNT_CONFIG/greeting; echo; cat $SLURM_VK_MOUNT_SECRET/password"]
    volumeMounts:
    - name: config
      mountPath: /etc/config
    - name: secret
      mountPath: /etc/secret
`))
		c.waitFor("Succeeded", 2*time.Minute, func() bool { return c.phase(name) == "Succeeded" })
		if got := c.must("logs", name); got != "hello from a configmap\ns3cr3t-e2e" {
			t.Errorf("the job read %q", got)
		}
	})
}

// admin is a slurmrestd client with SlurmUser's token, one per cluster:
// a client a call would leave its idle connections open, and slurmrestd
// stops answering new ones once a few dozen are held (seen on 24.11).
func (c *cluster) admin() *slurmclient.Client {
	c.t.Helper()
	if c.adminClient == nil {
		var err error
		if c.adminClient, err = slurmclient.New(slurmclient.Config{URL: c.lab.URL, TokenFile: c.lab.AdminTokenFile}); err != nil {
			c.t.Fatal(err)
		}
	}
	return c.adminClient
}

// slurmJob is the one Slurm job whose comment carries the pod UID, read
// through slurmrestd with SlurmUser's token; no job, or more than one, or
// a failed call fails the test.
func (c *cluster) slurmJob(uid string) slurmclient.Job {
	c.t.Helper()
	jobs, err := c.admin().Jobs(context.Background(), slurmclient.JobFilter{})
	if err != nil {
		c.t.Fatalf("list Slurm's jobs: %v", err)
	}
	var found []slurmclient.Job
	for _, j := range jobs {
		if strings.HasSuffix(j.Comment, ":"+uid) {
			found = append(found, j)
		}
	}
	if len(found) != 1 {
		c.t.Fatalf("pod %s has %d Slurm jobs, want 1: %v", uid, len(found), jobIDs(found))
	}
	return found[0]
}

// sharedAgent copies the exec agent where compute nodes find it, a
// directory of its own on the shared file system (removed after the
// test), and returns both.
func sharedAgent(t *testing.T, lab *labenv.Lab) (dir, agent string) {
	dir, err := os.MkdirTemp(lab.Shared, "agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	agent = filepath.Join(dir, "slurm-vk-agent")
	testbin.Copy(t, "slurm-vk-agent", agent)
	return dir, agent
}
