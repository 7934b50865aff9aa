package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestE2EImages runs real images from the lab's loopback registry through
// rootless podman and Charliecloud, driven with kubectl on a real control
// plane.
func TestE2EImages(t *testing.T) {
	c := setup(t)
	c.lab.RequireRuntime(t, "podman")
	c.lab.RequireRuntime(t, "charliecloud")
	app := c.lab.Registry + "/lab/app:1"
	with := func(runtime, name, spec string) string {
		return strings.Replace(podWith(nodeName, name, spec), "metadata:\n", "metadata:\n  annotations:\n    slurm-vk.io/runtime: "+runtime+"\n", 1)
	}
	podman := func(name, spec string) string { return with("podman", name, spec) }
	succeeded := func(name string) {
		c.t.Helper()
		c.waitFor(name+" Succeeded", 3*time.Minute, func() bool {
			ph := c.phase(name)
			if ph == "Failed" {
				out, _ := c.kubectl("describe", "pod", name)
				c.t.Fatalf("%s failed:\n%s", name, out)
			}
			return ph == "Succeeded"
		})
	}

	for _, runtime := range []string{"podman", "charliecloud"} {
		t.Run(runtime+": ENTRYPOINT and CMD against command and args, logs per container", func(t *testing.T) {
			c.t = t
			name := c.unique(t, "entry-"+runtime[:2])
			c.apply(with(runtime, name, fmt.Sprintf(`  containers:
  - name: image
    image: %[1]s
  - name: args
    image: %[1]s
    args: ["a1", "a 2"]
  - name: command
    image: %[1]s
    command: ["/bin/echo", "cmd-only"]
  - name: both
    image: %[1]s
    command: ["/bin/echo"]
    args: ["x", "y"]
`, app)))
			succeeded(name)
			for ctr, want := range map[string]string{"image": "from-entrypoint from-cmd", "args": "from-entrypoint a1 a 2", "command": "cmd-only", "both": "x y"} {
				if got := c.must("logs", name, "-c", ctr); got != want {
					t.Errorf("logs -c %s: %q, want %q", ctr, got, want)
				}
			}
		})
	}

	t.Run("inside the container: the pod's env and PATH, a ConfigMap at its mountPath, an emptyDir shared by two containers", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "inside")
		cm := name + "-cfg"
		c.must("create", "configmap", cm, "--from-literal=app.yaml=level: debug")
		t.Cleanup(func() { c.kubectl("delete", "configmap", cm, "--ignore-not-found") })
		c.apply(podman(name, fmt.Sprintf(`  volumes:
  - name: config
    configMap:
      name: %[2]s
  - name: scratch
    emptyDir: {}
  containers:
  - name: writer
    image: %[1]s
    env:
    - name: PATH
      value: /opt/conda/bin:/bin
    - name: GREETING
      value: from-pod
    workingDir: /tmp
    command: ["sh", "-c", "echo \"$GREETING $IMAGE_ONLY $PATH\"; pwd; cat /etc/app/app.yaml; echo; echo shared >/scratch/x"]
    volumeMounts:
    - {name: config, mountPath: /etc/app}
    - {name: scratch, mountPath: /scratch}
  - name: reader
    image: %[1]s
    command: ["sh", "-c", "for i in $(seq 300); do [ -e /data/x ] && break; sleep 0.1; done; cat /data/x"]
    volumeMounts:
    - {name: scratch, mountPath: /data}
`, app, cm)))
		succeeded(name)
		if got, want := c.must("logs", name, "-c", "writer"), "from-pod kept /opt/conda/bin:/bin\n/tmp\nlevel: debug"; got != want {
			t.Errorf("writer: %q, want %q", got, want)
		}
		if got := c.must("logs", name, "-c", "reader"); got != "shared" {
			t.Errorf("reader: %q", got)
		}
	})

	t.Run("a pull failure is explained in get and describe", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "nopull")
		c.apply(podman(name, fmt.Sprintf("  containers:\n  - name: main\n    image: %s/lab/does-not-exist:1\n", c.lab.Registry)))
		c.waitFor("Failed", 3*time.Minute, func() bool { return c.phase(name) == "Failed" })
		if got := c.must("get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].state.terminated.reason}"); got != "ErrImagePull" {
			t.Errorf("reason %q, want ErrImagePull", got)
		}
		if out := c.must("get", "pod", name); !strings.Contains(out, "ErrImagePull") {
			t.Errorf("kubectl get pod does not show ErrImagePull:\n%s", out)
		}
		if out := c.must("describe", "pod", name); !strings.Contains(out, "Failed to pull image") || !strings.Contains(out, "does-not-exist") {
			t.Errorf("describe lacks podman's message:\n%s", out)
		}
	})

	t.Run("a private image pulled with imagePullSecrets", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "private")
		pass, err := c.lab.RegistryPassword()
		if err != nil {
			t.Fatal(err)
		}
		secret := name + "-cred"
		c.must("create", "secret", "docker-registry", secret, "--docker-server="+c.lab.RegistryPrivate,
			"--docker-username="+c.lab.RegistryUser, "--docker-password="+pass)
		t.Cleanup(func() { c.kubectl("delete", "secret", secret, "--ignore-not-found") })
		c.apply(podman(name, fmt.Sprintf(`  imagePullSecrets:
  - name: %s
  containers:
  - name: main
    image: %s/lab/busybox:1
    imagePullPolicy: Always
    command: ["echo", "private-ok"]
`, secret, c.lab.RegistryPrivate)))
		succeeded(name)
		if got := c.must("logs", name); got != "private-ok" {
			t.Errorf("logs %q", got)
		}
	})
}
