package provider

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/tunnel/agent"
)

// TestAgentScript: with an agent configured, the job script starts it
// for its own pod, quoted, and each container records its PID while it
// runs; without one, or for srun's tasks (which run elsewhere), neither.
func TestAgentScript(t *testing.T) {
	root := t.TempDir()
	cfg := testCfg
	cfg.SharedRoot = root
	cfg.Agent, cfg.AgentURL = filepath.Join(root, "agent"), "http://login1:8090"
	// A stand-in agent that records its arguments.
	if err := os.WriteFile(cfg.Agent, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\" >\"$(dirname \"$0\")/agent.args\"\necho $$ >\"$(dirname \"$0\")/agent.pid\"\nexec sleep 60\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	pod := goldenPods()["hostile"].DeepCopy()
	pod.Spec.InitContainers = nil
	pod.Spec.Containers = pod.Spec.Containers[:1]
	c := &pod.Spec.Containers[0]
	c.Command, c.Args, c.Env, c.EnvFrom, c.VolumeMounts, c.WorkingDir = []string{"sh", "-c", `i=0; while [ ! -s "$SVK_PIDS/../../../agent.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
cat "$SVK_PIDS/` + c.Name + `" >"$SVK_PIDS/../seen"; echo $$$$ >>"$SVK_PIDS/../seen"`}, nil,
		[]corev1.EnvVar{{Name: "SVK_PIDS", Value: layout.Pod{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}.Path(root, layout.PIDsDir)}}, nil, nil, ""
	pod.Spec.Volumes = nil
	plan, err := Translate(pod, cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	if !plan.Agent {
		t.Fatal("the plan does not say the script starts the agent: its token would not be staged")
	}
	ref := PodRef(pod)
	dir := ref.Path(root)
	os.MkdirAll(dir, 0o755)
	// Output to a file, not a pipe: the script's end is then its own, not
	// that of whatever it left holding the pipe.
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", plan.Spec.Script)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, out, out
	if err := cmd.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("the script: %v: %s", err, b)
	}
	args, _ := os.ReadFile(filepath.Join(root, "agent.args"))
	want := strings.Join([]string{"-url", cfg.AgentURL, "-namespace", pod.Namespace, "-name", pod.Name, "-uid", string(pod.UID),
		"-token-file", ref.Path(root, layout.Staged(layout.StagedAgentToken)), "-pids", ref.Path(root, layout.PIDsDir), "-runtime", RuntimeNone}, "\n") + "\n"
	if string(args) != want {
		t.Errorf("the agent got\n%s\nwant\n%s", args, want)
	}
	seen, _ := os.ReadFile(ref.Path(root, layout.WorkDir, "seen"))
	if f := strings.Fields(string(seen)); len(f) != 2 || f[0] != f[1] {
		t.Errorf("the container's PID file said %q: want the container's own PID", seen)
	}
	if _, err := os.Stat(ref.Path(root, layout.PIDsDir, c.Name)); !os.IsNotExist(err) {
		t.Errorf("the PID file outlived its container: %v", err)
	}
	// The agent is stopped when the job ends (it would be with the job's
	// cgroup anyway).
	pidText, _ := os.ReadFile(filepath.Join(root, "agent.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if pid <= 0 {
		t.Fatalf("the stand-in agent never ran (%q)", pidText)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil || strings.Contains(string(st), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the agent (pid %d) outlived the job script", pid)
		}
	}

	for name, mod := range map[string]func(*TranslateConfig, *corev1.Pod){
		"no agent configured": func(c *TranslateConfig, _ *corev1.Pod) { c.Agent = "" },
		"srun's tasks": func(_ *TranslateConfig, p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationLauncher: LauncherSrun, AnnotationTasks: "2"}
			p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2")}
		},
	} {
		c, p := cfg, pod.DeepCopy()
		mod(&c, p)
		plan, err := Translate(p, c, lookups)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if plan.Agent || strings.Contains(plan.Spec.Script, "svk_agent=$!") || strings.Contains(plan.Spec.Script, "BASHPID") {
			t.Errorf("%s: the script starts the agent", name)
		}
	}
}

// TestOnceSuffix: the agent (package tunnel imports nothing of ours) and
// the job script name the stdinOnce holder's file alike.
func TestOnceSuffix(t *testing.T) {
	if layout.OnceSuffix != agent.OnceSuffix {
		t.Errorf("layout.OnceSuffix %q, agent.OnceSuffix %q", layout.OnceSuffix, agent.OnceSuffix)
	}
}
