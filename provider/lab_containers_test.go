package provider

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// TestLabContainers runs real images from the lab's loopback registry
// with rootless podman and with Charliecloud in real Slurm jobs, and checks
// what a kubelet user expects inside the container.
func TestLabContainers(t *testing.T) {
	r := newLabRig(t)
	for _, rt := range []string{RuntimePodman, RuntimeCharliecloud} {
		r.lab.RequireRuntime(t, rt)
	}
	pass, err := r.lab.RegistryPassword()
	if err != nil {
		t.Fatal(err)
	}
	auth := base64.StdEncoding.EncodeToString([]byte(r.lab.RegistryUser + ":" + pass))
	regcred, _ := json.Marshal(map[string]any{"auths": map[string]any{r.lab.RegistryPrivate: map[string]string{"auth": auth}}})
	r.look = Lookups{ConfigMap: lookups.ConfigMap, Secret: func(ns, name string) (*corev1.Secret, error) {
		if name == "regcred" {
			return &corev1.Secret{Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: regcred}}, nil
		}
		return lookups.Secret(ns, name)
	}}
	p := r.start()
	for _, rt := range []string{RuntimePodman, RuntimeCharliecloud} {
		t.Run(rt, func(t *testing.T) { containerScenarios(t, r, p, rt) })
	}
}

func containerScenarios(t *testing.T, r *labRig, p *Provider, rt string) {
	ctx := context.Background()
	app := r.lab.Registry + "/lab/app:1"
	busybox := r.lab.Registry + "/lab/busybox:1"
	labPod := func(name string, cs ...corev1.Container) *corev1.Pod {
		pod := labPod(name+"-"+rt[:2], cs...)
		pod.Annotations = map[string]string{AnnotationRuntime: rt}
		return pod
	}

	run := func(t *testing.T, pod *corev1.Pod, want corev1.PodPhase) *corev1.Pod {
		t.Helper()
		if err := p.CreatePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		return r.waitFor(t, pod, string(want), phase(want))
	}
	wantLogs := func(t *testing.T, pod *corev1.Pod, want map[string]string) {
		t.Helper()
		for c, w := range want {
			if got := logsOf(t, p, pod, c, apiOpts()); got != w {
				t.Errorf("%s logs %q, want %q", c, got, w)
			}
		}
	}

	t.Run("command and args against the image's ENTRYPOINT and CMD", func(t *testing.T) {
		pod := labPod("entry",
			corev1.Container{Name: "image", Image: app},
			corev1.Container{Name: "args", Image: app, Args: []string{"a1", "a 2"}},
			corev1.Container{Name: "command", Image: app, Command: []string{"/bin/echo", "cmd-only"}},
			corev1.Container{Name: "both", Image: app, Command: []string{"/bin/echo"}, Args: []string{"x", "y"}})
		run(t, pod, corev1.PodSucceeded)
		wantLogs(t, pod, map[string]string{
			"image":   "from-entrypoint from-cmd\n",
			"args":    "from-entrypoint a1 a 2\n",
			"command": "cmd-only\n",
			"both":    "x y\n",
		})
	})

	t.Run("env: the image's, overridden by the pod's; PATH and Secrets; workingDir; the job's user", func(t *testing.T) {
		c := corev1.Container{Name: "main", Image: app, Command: []string{"sh", "-c",
			`echo "$GREETING $IMAGE_ONLY $MODE"; pwd; echo "$PATH"; id -u; test "$DB_PASSWORD" = 'hunter2-TOP-SECRET
' && echo secret-ok`},
			WorkingDir: "/tmp",
			Env: []corev1.EnvVar{{Name: "GREETING", Value: "from-pod"}, {Name: "PATH", Value: "/opt/conda/bin:/bin"},
				{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "MODE"}}},
				{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}}}
		// The pod's PATH is the container's (sh is found in /bin through
		// it), and podman itself is still found and runs.
		pod := labPod("env", c)
		run(t, pod, corev1.PodSucceeded)
		wantLogs(t, pod, map[string]string{"main": "from-pod kept fast\n/tmp\n/opt/conda/bin:/bin\n" + strconv.Itoa(r.lab.UID) + "\nsecret-ok\n"})
	})

	t.Run("securityContext runAsUser and runAsGroup: podman runs as them, other runtimes refuse with the reason", func(t *testing.T) {
		uid, gid := int64(65534), int64(4321)
		pod := labPod("runas", corev1.Container{Name: "main", Image: busybox, Command: []string{"sh", "-c", "id -u; id -g"},
			SecurityContext: &corev1.SecurityContext{RunAsUser: &uid, RunAsGroup: &gid}})
		if rt == RuntimePodman {
			run(t, pod, corev1.PodSucceeded)
			wantLogs(t, pod, map[string]string{"main": "65534\n4321\n"})
			return
		}
		got := run(t, pod, corev1.PodFailed)
		if s := got.Status.ContainerStatuses[0].State.Terminated; s == nil || s.Reason != "RunAsNotSupported" || !strings.Contains(s.Message, "runAsUser 65534") {
			t.Errorf("runAsUser with runtime %s: %+v, want RunAsNotSupported naming runAsUser 65534", rt, s)
		}
	})

	t.Run("volumes at their mountPath: configMap, emptyDir shared by two containers, subPath", func(t *testing.T) {
		pod := labPod("vols",
			corev1.Container{Name: "writer", Image: busybox, Command: []string{"sh", "-c",
				// Charliecloud 0.38 binds read-write: readOnly is checked with podman only.
				`cat /etc/app/app.yaml; echo shared >/scratch/x; if [ "$RT" = charliecloud ] || ! touch /etc/app/nope 2>/dev/null; then echo read-only; fi`},
				Env:          []corev1.EnvVar{{Name: "RT", Value: rt}},
				VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}, {Name: "scratch", MountPath: "/scratch"}}},
			// A subPath file onto a path the image has (Charliecloud binds
			// files only onto existing ones).
			corev1.Container{Name: "reader", Image: busybox, Command: []string{"sh", "-c",
				`for i in $(seq 300); do [ -e /data/x ] && break; sleep 0.1; done; cat /data/x; cat /etc/hosts`},
				VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/data"}, {Name: "config", MountPath: "/etc/hosts", SubPath: "app.yaml"}}})
		pod.Spec.Volumes = []corev1.Volume{
			{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}},
			{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		run(t, pod, corev1.PodSucceeded)
		wantLogs(t, pod, map[string]string{"writer": "level: debug\nread-only\n", "reader": "shared\nlevel: debug\n"})
		fi, err := os.Stat(PodRef(pod).Path(r.cfg.SharedRoot, layout.WorkDir, "scratch", "x"))
		if err != nil {
			t.Fatal(err)
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); !ok || int(st.Uid) != r.lab.UID {
			t.Errorf("a file the container wrote to its emptyDir belongs to uid %d, want the job user's %d", st.Uid, r.lab.UID)
		}
	})

	t.Run("a pull failure is explained: ErrImagePull with the runtime's message", func(t *testing.T) {
		pod := labPod("nope", corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/does-not-exist:1"})
		done := run(t, pod, corev1.PodFailed)
		ts := done.Status.ContainerStatuses[0].State.Terminated
		if ts == nil || ts.Reason != "ErrImagePull" || !strings.Contains(ts.Message, "does-not-exist") || !strings.Contains(ts.Message, "Failed to pull image") ||
			!strings.Contains(strings.ToLower(ts.Message), map[string]string{RuntimePodman: "unknown name", RuntimeCharliecloud: "not in registry"}[rt]) {
			t.Fatalf("container %+v, want ErrImagePull with the runtime's message", done.Status.ContainerStatuses[0].State)
		}
		t.Logf("message: %s", ts.Message)
	})

	t.Run("pull policy Never with no local image: ErrImageNeverPull", func(t *testing.T) {
		pod := labPod("never", corev1.Container{Name: "main", Image: r.lab.Registry + "/lab/busybox:never-pulled", ImagePullPolicy: corev1.PullNever})
		done := run(t, pod, corev1.PodFailed)
		if ts := done.Status.ContainerStatuses[0].State.Terminated; ts == nil || ts.Reason != "ErrImageNeverPull" {
			t.Fatalf("container %+v, want ErrImageNeverPull", done.Status.ContainerStatuses[0].State)
		}
	})

	t.Run("a private image: pulled with imagePullSecrets, refused without", func(t *testing.T) {
		private := r.lab.RegistryPrivate + "/lab/busybox:1"
		pod := labPod("private", corev1.Container{Name: "main", Image: private, ImagePullPolicy: corev1.PullAlways, Command: []string{"echo", "private-ok"}})
		pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		run(t, pod, corev1.PodSucceeded)
		wantLogs(t, pod, map[string]string{"main": "private-ok\n"})

		anon := labPod("anon", corev1.Container{Name: "main", Image: private, ImagePullPolicy: corev1.PullAlways, Command: []string{"echo", "must-not-run"}})
		done := run(t, anon, corev1.PodFailed)
		if ts := done.Status.ContainerStatuses[0].State.Terminated; ts == nil || ts.Reason != "ErrImagePull" {
			t.Fatalf("container %+v, want ErrImagePull", done.Status.ContainerStatuses[0].State)
		}
	})

	// The signal DeletePod sends, sent here directly: DeletePod also removes
	// the pod directory at once when the fetch endpoint keeps none
	// (retention 0, as here), which would take the marker with it.
	t.Run("SIGTERM as a delete sends it reaches the container's process, its marker is written", func(t *testing.T) {
		pod := labPod("term", corev1.Container{Name: "main", Image: busybox, Command: []string{"sh", "-c",
			`trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.2; done`}})
		grace := int64(60)
		pod.Spec.TerminationGracePeriodSeconds = &grace
		run(t, pod, corev1.PodRunning)
		waitLog(t, p, pod, "main", "ready\n")
		st, _ := p.get(pod.Namespace, pod.Name)
		if err := r.slurm.Signal(ctx, st.job, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		marker := PodRef(pod).Path(r.cfg.SharedRoot, layout.ExitFile("main", 0))
		got := waitFile(t, marker)
		if code := strings.SplitN(got, "\n", 2)[0]; code != "3" {
			t.Errorf("marker %q, want exit code 3 from the container's own TERM handler", got)
		}
		// With Charliecloud every process of the job is the container's,
		// and Slurm signals them all: the shell may report its sleep's end.
		if b, _ := os.ReadFile(PodRef(pod).Path(r.cfg.SharedRoot, layout.LogFile("main", 0))); !strings.HasPrefix(string(b), "ready\n") || !strings.HasSuffix(string(b), "got-term\n") {
			t.Errorf("log %q", b)
		}
		done := r.waitFor(t, pod, "failed with the container's code", phase(corev1.PodFailed))
		if ts := done.Status.ContainerStatuses[0].State.Terminated; ts == nil || ts.ExitCode != 3 {
			t.Errorf("container %+v, want terminated with 3", done.Status.ContainerStatuses[0].State)
		}
	})
}

// waitLog waits until the container's log is want.
func waitLog(t *testing.T, p *Provider, pod *corev1.Pod, container, want string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for got := ""; got != want; got = logsOf(t, p, pod, container, apiOpts()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s log %q, want %q", container, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFile waits for a file to exist and returns what it holds.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
