package e2e

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	// The agent where compute nodes find it: the shared file system.
	dir, err := os.MkdirTemp(lab.Shared, "agent-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	agent := filepath.Join(dir, "slurm-vk-agent")
	cmd := exec.Command("go", "build", "-o", agent, "github.com/slurmkube/slurm-vk/cmd/slurm-vk-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v: %s", err, out)
	}
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
    command: [sh, -c, 'echo ready; sleep 300']
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
		out, err := kubectl("", "exec", "exec-me", "-c", "main", "--", "sh", "-c", `echo "$GREETING"; pwd; echo oops >&2; exit 3`)
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("kubectl exec: %v (%s), want exit code 3", err, out)
		}
		if !strings.Contains(out, "hello from the job\n/tmp\n") || !strings.Contains(out, "oops") {
			t.Errorf("kubectl exec printed %q", out)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		out, err := kubectl("shout\n", "exec", "-i", "exec-me", "--", "tr", "a-z", "A-Z")
		if err != nil || out != "SHOUT\n" {
			t.Errorf("kubectl exec -i: %q, %v", out, err)
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
	t.Run("a user without pods/exec is refused by the API server", func(t *testing.T) {
		out, err := kubectl("", "--as=system:serviceaccount:default:nobody", "exec", "exec-me", "--", "true")
		if err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("kubectl exec as a user without RBAC: %v: %s", err, out)
		}
	})
	t.Run("a container that does not exist", func(t *testing.T) {
		out, err := kubectl("", "exec", "exec-me", "-c", "sidecar", "--", "true")
		if err == nil || !strings.Contains(out, "sidecar") {
			t.Errorf("kubectl exec -c sidecar: %v: %s", err, out)
		}
	})
}
