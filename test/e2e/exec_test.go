package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/test/labenv"
)

// TestE2EExec: kubectl exec into a pod's running job, through the API
// server, the kubelet API, slurm-vk, slurm-fetchd and the agent the job
// started (no SSH, no port on the compute node): output and exit code,
// stdin, a terminal, and RBAC's refusal for a user without pods/exec.
func TestE2EExec(t *testing.T) {
	lab := labenv.Require(t)
	dir, agent := sharedAgent(t, lab)
	// What the job serves, for port-forward.
	web := filepath.Join(dir, "web")
	os.Mkdir(web, 0o755)
	os.WriteFile(filepath.Join(web, "hello.txt"), []byte("hello through port-forward\n"), 0o644)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	c := setup(t, "-agent", agent)
	c.apply(`apiVersion: v1
kind: Pod
metadata: {name: exec-me, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: ` + nodeName + `}
  tolerations: [{key: virtual-kubelet.io/provider, operator: Exists}]
  restartPolicy: Never
  containers:
  - name: main
    image: none
    workingDir: /tmp
    env: [{name: GREETING, value: hello from the job}]
    command: [sh, -c, 'busybox httpd -f -p 127.0.0.1:` + port + ` -h ` + web + ` & echo ready; sleep 300']
`)
	t.Cleanup(func() { c.kubectl("delete", "pod", "exec-me", "--grace-period=0", "--force", "--ignore-not-found") })
	c.waitFor("exec-me to run", 3*time.Minute, func() bool { return c.phase("exec-me") == "Running" })
	kubectl := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command("kubectl", append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// The job's agent connects once the job runs; until then exec says so.
	c.waitFor("the job's agent to connect", time.Minute, func() bool {
		_, err := kubectl("", "exec", "exec-me", "--", "true")
		return err == nil
	})

	t.Run("output, the container's env and directory, exit code 3", func(t *testing.T) {
		// stdout and stderr apart: their relative order is not kept.
		cmd := exec.Command("kubectl", "--kubeconfig", c.kubeconfig, "exec", "exec-me", "-c", "main", "--", "sh", "-c", `echo "$GREETING"; pwd; echo oops >&2; exit 3`)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("kubectl exec: %v (%s%s), want exit code 3", err, stdout.String(), stderr.String())
		}
		if stdout.String() != "hello from the job\n/tmp\n" || !strings.HasPrefix(stderr.String(), "oops\n") {
			t.Errorf("kubectl exec printed %q on stdout, %q on stderr", stdout.String(), stderr.String())
		}
	})
	t.Run("stdin", func(t *testing.T) {
		// stdout alone: kubectl's own WebSocket client may log to stderr
		// ("Unknown stream id 1, discarding message", seen once in CI).
		cmd := exec.Command("kubectl", "--kubeconfig", c.kubeconfig, "exec", "-i", "exec-me", "--", "tr", "a-z", "A-Z")
		cmd.Stdin = strings.NewReader("shout\n")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || string(out) != "SHOUT\n" {
			t.Errorf("kubectl exec -i: %q, %v (stderr %q)", out, err, stderr.String())
		}
	})
	t.Run("a terminal (-it, through script's pty)", func(t *testing.T) {
		line := "kubectl --kubeconfig " + c.kubeconfig + " exec -it exec-me -- sh -c 'tty; echo TERM=$TERM'"
		cmd := exec.Command("script", "-qec", line, "/dev/null")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "/dev/pts/") {
			t.Errorf("kubectl exec -it: %v: %q, want a pts", err, out)
		}
	})
	t.Run("a user without pods/exec or pods/portforward is refused by the API server", func(t *testing.T) {
		out, err := kubectl("", "--as=system:serviceaccount:default:nobody", "exec", "exec-me", "--", "true")
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("kubectl exec as a user without RBAC: %v: %s", err, out)
		}
		_, local, _ := net.SplitHostPort(freeAddr(t))
		out, err = kubectl("", "--as=system:serviceaccount:default:nobody", "port-forward", "pod/exec-me", local+":"+port)
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("kubectl port-forward as a user without RBAC: %v: %s", err, out)
		}
	})
	t.Run("the kubelet API: exec needs create on nodes/proxy, also as a WebSocket GET", func(t *testing.T) {
		// Two ServiceAccounts straight at the kubelet API, as a scraper
		// would call it: one granted get on nodes/proxy (what a metrics
		// scraper has), one create. A WebSocket exec is a GET; a kubelet
		// would let the first in.
		c.apply(`apiVersion: v1
kind: ServiceAccount
metadata: {name: scraper, namespace: default}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: operator, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-nodes-proxy-get}
rules: [{apiGroups: [""], resources: [nodes/proxy], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-nodes-proxy-create}
rules: [{apiGroups: [""], resources: [nodes/proxy], verbs: [get, create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-scraper}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-nodes-proxy-get}
subjects: [{kind: ServiceAccount, name: scraper, namespace: default}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-nodes-proxy-create}
subjects: [{kind: ServiceAccount, name: operator, namespace: default}]
`)
		t.Cleanup(func() {
			c.kubectl("delete", "clusterrolebinding", "e2e-scraper", "e2e-operator", "--ignore-not-found")
			c.kubectl("delete", "clusterrole", "e2e-nodes-proxy-get", "e2e-nodes-proxy-create", "--ignore-not-found")
			c.kubectl("delete", "serviceaccount", "scraper", "operator", "--ignore-not-found")
		})
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		status := func(sa, path string) int {
			tok := strings.TrimSpace(c.must("create", "token", sa))
			req, _ := http.NewRequest("GET", "https://127.0.0.1:10250"+path, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			// A protocol the kubelet API's streams speak, so that a 403 is
			// the authorizer's and not a refused handshake's.
			req.Header.Set("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		exec := "/exec/default/exec-me/main?command=true&output=1"
		if code := status("scraper", exec); code != http.StatusForbidden {
			t.Errorf("a WebSocket exec with get on nodes/proxy: HTTP %d, want 403", code)
		}
		if code := status("scraper", "/portForward/default/exec-me?port="+port); code != http.StatusForbidden {
			t.Errorf("a WebSocket port-forward with get on nodes/proxy: HTTP %d, want 403", code)
		}
		if code := status("scraper", "/containerLogs/default/exec-me/main"); code != http.StatusOK {
			t.Errorf("logs with get on nodes/proxy: HTTP %d, want 200", code)
		}
		if code := status("operator", exec); code != http.StatusSwitchingProtocols {
			t.Errorf("a WebSocket exec with create on nodes/proxy: HTTP %d, want 101 (let through, the same handshake)", code)
		}
		if code := status("operator", "/portForward/default/exec-me?port="+port); code != http.StatusSwitchingProtocols {
			t.Errorf("a WebSocket port-forward with create on nodes/proxy: HTTP %d, want 101 (let through, the same handshake)", code)
		}
	})
	// bench/exec.sh: kubectl exec round trips against kubectl get of the
	// same pod (the API server's own round trip), alternately.
	if n, _ := strconv.Atoi(os.Getenv("SLURM_VK_BENCH_EXEC")); n > 0 {
		var ex, get []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			if out, err := kubectl("", "exec", "exec-me", "--", "true"); err != nil {
				t.Fatalf("kubectl exec: %v: %s", err, out)
			}
			t1 := time.Now()
			if out, err := kubectl("", "get", "pod", "exec-me"); err != nil {
				t.Fatalf("kubectl get: %v: %s", err, out)
			}
			ex, get = append(ex, t1.Sub(t0)), append(get, time.Since(t1))
		}
		pct := func(d []time.Duration, p float64) time.Duration {
			slices.Sort(d)
			return d[int(p*float64(len(d)-1))].Round(time.Millisecond)
		}
		t.Logf("%d round trips: kubectl exec -- true median %v p99 %v; kubectl get pod median %v p99 %v; ratio of medians %.2f",
			n, pct(ex, 0.5), pct(ex, 0.99), pct(get, 0.5), pct(get, 0.99), float64(pct(ex, 0.5))/float64(pct(get, 0.5)))
	}
	t.Run("port-forward to a server in the job, several connections at once", func(t *testing.T) {
		_, local, _ := net.SplitHostPort(freeAddr(t))
		pf := exec.Command("kubectl", "--kubeconfig", c.kubeconfig, "port-forward", "pod/exec-me", local+":"+port)
		stdout, _ := pf.StdoutPipe()
		if err := pf.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { pf.Process.Kill(); pf.Wait() }()
		ready := make(chan struct{})
		go func() {
			buf := make([]byte, 256)
			n, _ := stdout.Read(buf)
			if strings.Contains(string(buf[:n]), "Forwarding from") {
				close(ready)
			}
			io.Copy(io.Discard, stdout)
		}()
		select {
		case <-ready:
		case <-time.After(30 * time.Second):
			t.Fatal("kubectl port-forward never said it was forwarding")
		}
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				// The server starts with the job: a refused connection
				// early is retried, as a browser's user would.
				for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
					resp, err := http.Get("http://127.0.0.1:" + local + "/hello.txt")
					if err == nil {
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 || string(b) != "hello through port-forward\n" {
							t.Errorf("GET %d through port-forward: %d %q", i, resp.StatusCode, b)
						}
						return
					}
					if time.Now().After(deadline) {
						t.Errorf("GET %d through port-forward: %v", i, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		// bench/exec.sh: a 64 MiB download through port-forward against
		// the same download straight from the job's server, alternately.
		if os.Getenv("SLURM_VK_BENCH_EXEC") == "" {
			return
		}
		const size = 64 << 20
		if err := os.WriteFile(filepath.Join(web, "big"), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		get := func(port string) time.Duration {
			t0 := time.Now()
			resp, err := http.Get("http://127.0.0.1:" + port + "/big")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != size {
				t.Fatalf("download through %s: %d bytes, %v", port, n, err)
			}
			return time.Since(t0)
		}
		var through, direct []time.Duration
		for range 3 {
			through, direct = append(through, get(local)), append(direct, get(port))
		}
		slices.Sort(through)
		slices.Sort(direct)
		mibs := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
		t.Logf("64 MiB, median of 3: through port-forward %.0f MiB/s, direct %.0f MiB/s, ratio %.2f",
			mibs(through[1]), mibs(direct[1]), mibs(through[1])/mibs(direct[1]))
	})
	t.Run("attach: a clear refusal for a container without stdin", func(t *testing.T) {
		out, err := kubectl("", "attach", "exec-me", "-c", "main")
		if err == nil || !strings.Contains(out, "was not started with stdin or tty") {
			t.Errorf("kubectl attach: %v: %s", err, out)
		}
	})
	// A real container runtime: exec enters the image, and kubectl run -i
	// (stdin, stdinOnce) attaches to what it started.
	t.Run("podman: exec into the image", func(t *testing.T) {
		c.lab.RequireRuntime(t, "podman")
		name := c.unique(t, "exec-po")
		c.apply(strings.Replace(podWith(nodeName, name, `  containers:
  - name: app
    image: `+c.lab.Registry+`/lab/busybox:1
    workingDir: /tmp
    env: [{name: GREETING, value: hello from the image}]
    command: [sh, -c, 'echo image >/tmp/marker; trap "exit 0" TERM; sleep 300 & wait']
`), "metadata:\n", "metadata:\n  annotations:\n    slurm-vk.io/runtime: podman\n", 1))
		c.waitFor(name+" to run", 3*time.Minute, func() bool { return c.phase(name) == "Running" })
		var out string
		c.waitFor("exec into the podman container", 2*time.Minute, func() bool {
			var err error
			out, err = kubectl("", "exec", name, "--", "sh", "-c", `echo "$GREETING"; pwd; cat /tmp/marker`)
			return err == nil
		})
		if out != "hello from the image\n/tmp\nimage\n" {
			t.Errorf("kubectl exec into the podman container: %q", out)
		}
	})
	t.Run("podman: kubectl run -i attaches, stdin reaches the container, its end of file ends it", func(t *testing.T) {
		c.lab.RequireRuntime(t, "podman")
		name := c.unique(t, "run-i")
		overrides := `{"spec":{"nodeSelector":{"kubernetes.io/hostname":"` + nodeName + `"},"tolerations":[{"key":"virtual-kubelet.io/provider","operator":"Exists"}]}}`
		// Bounded: if stdin never reached the container, it would wait for
		// it, and kubectl with it.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.kubeconfig, "run", name, "-i", "--rm", "--restart=Never", "--image="+c.lab.Registry+"/lab/busybox:1",
			"--annotations=slurm-vk.io/runtime=podman", "--overrides="+overrides, "--pod-running-timeout=3m",
			"--", "sh", "-c", `read l; echo "got $l"; read l || echo "end of stdin"`)
		cmd.Stdin = strings.NewReader("hello\n")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "got hello\nend of stdin\n") {
			t.Errorf("kubectl run -i: %v: %q", err, out)
		}
	})
	t.Run("podman: kubectl run -it, a shell with a terminal, typed to through script's pty", func(t *testing.T) {
		c.lab.RequireRuntime(t, "podman")
		name := c.unique(t, "run-it")
		overrides := `{"spec":{"nodeSelector":{"kubernetes.io/hostname":"` + nodeName + `"},"tolerations":[{"key":"virtual-kubelet.io/provider","operator":"Exists"}]}}`
		line := "kubectl --kubeconfig " + c.kubeconfig + " run " + name + " -it --rm --restart=Never --image=" + c.lab.Registry + "/lab/busybox:1" +
			" --annotations=slurm-vk.io/runtime=podman --overrides='" + overrides + "' --pod-running-timeout=3m -- sh"
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "script", "-qec", line, "/dev/null")
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		pr, pw := io.Pipe()
		cmd.Stdout, cmd.Stderr = pw, pw
		var mu sync.Mutex
		var out strings.Builder
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := pr.Read(buf)
				mu.Lock()
				out.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		seen := func(s string) bool {
			mu.Lock()
			defer mu.Unlock()
			return strings.Contains(out.String(), s)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() { ended <- cmd.Wait(); pw.Close() }()
		// Typed until the shell answers: what is typed before the attach
		// has found the output's start may be echoed where nobody sees it.
		answered := false
		for deadline := time.Now().Add(3 * time.Minute); !answered && time.Now().Before(deadline); {
			io.WriteString(in, "tty; echo answer-$((6*7))\n")
			for wait := time.Now().Add(3 * time.Second); !answered && time.Now().Before(wait); time.Sleep(100 * time.Millisecond) {
				answered = seen("answer-42")
			}
		}
		if !answered || !seen("/dev/pts/") {
			mu.Lock()
			t.Fatalf("kubectl run -it: no answer from a shell on a terminal: %q", out.String())
		}
		io.WriteString(in, "exit\n")
		select {
		case err := <-ended:
			if err != nil {
				t.Errorf("kubectl run -it: %v", err)
			}
		case <-time.After(2 * time.Minute):
			t.Error("kubectl run -it did not end when its shell exited")
		}
	})
	t.Run("a container that does not exist", func(t *testing.T) {
		out, err := kubectl("", "exec", "exec-me", "-c", "sidecar", "--", "true")
		if err == nil || !strings.Contains(out, "sidecar") {
			t.Errorf("kubectl exec -c sidecar: %v: %s", err, out)
		}
	})
}
