package provider

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestImageFileRuntimesWithStubs runs the apptainer and enroot scripts with
// bash against stub runtimes (not installed here) that record their calls:
// the pull policy, a pull failure's reason, credentials kept out of argv.
func TestImageFileRuntimesWithStubs(t *testing.T) {
	stub := `#!/bin/sh
echo "$0 $*" >>"$STUB_CALLS"
case "$1" in
pull) [ -n "$STUB_FAIL" ] && { echo "FATAL: unauthorized: $APPTAINER_DOCKER_USERNAME" >&2; exit 255; }; echo sif >"$3" ;;
import) [ -n "$STUB_FAIL" ] && { echo "[ERROR] URL https://x/v2/ returned error code: 401" >&2; exit 1; }; cat "$ENROOT_CONFIG_PATH/.credentials" >>"$STUB_CALLS" 2>/dev/null; echo sqsh >"$3" ;;
esac
exit 0
`
	for _, rt := range []string{RuntimeApptainer, RuntimeEnroot} {
		t.Run(rt, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			os.Mkdir(bin, 0o755)
			os.WriteFile(filepath.Join(bin, rt), []byte(stub), 0o755)
			cfg := testCfg
			cfg.Runtime, cfg.SharedRoot = rt, filepath.Join(dir, "shared")
			look := Lookups{ConfigMap: lookups.ConfigMap, Secret: func(ns, name string) (*corev1.Secret, error) {
				return &corev1.Secret{Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"reg.example:5000":{"auth":"dXNlcjpzM2NyM3Q="}}}`)}}, nil
			}}
			calls := filepath.Join(dir, "calls")
			run := func(name string, policy corev1.PullPolicy, fail bool) (marker, argv string) {
				t.Helper()
				pod := basePod(name, corev1.Container{Name: "main", Image: "reg.example:5000/lab/app:1", ImagePullPolicy: policy, Command: []string{"true"}})
				pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
				plan, err := Translate(pod, cfg, look)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range plan.Staged {
					p := PodRef(pod).Path(cfg.SharedRoot, "_staged", f.Path)
					os.MkdirAll(filepath.Dir(p), 0o700)
					os.WriteFile(p, f.Data, os.FileMode(f.Mode))
				}
				os.Remove(calls)
				cmd := exec.Command("bash", "-c", plan.Spec.Script)
				cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "SLURM_VK_IMAGE_CACHE=" + filepath.Join(dir, "cache"), "STUB_CALLS=" + calls, "SLURM_JOB_ID=7"}
				if fail {
					cmd.Env = append(cmd.Env, "STUB_FAIL=1")
				}
				cmd.Run()
				m, _ := os.ReadFile(PodRef(pod).Path(cfg.SharedRoot, "main", "0.exit"))
				a, _ := os.ReadFile(calls)
				return string(m), string(a)
			}
			pulls := func(argv string) int {
				return strings.Count(argv, map[string]string{RuntimeApptainer: " pull ", RuntimeEnroot: " import "}[rt])
			}

			if m, argv := run("never", corev1.PullNever, false); !strings.HasPrefix(m, "125\nErrImageNeverPull\n") || pulls(argv) != 0 {
				t.Errorf("Never without an image: marker %q, calls %q", m, argv)
			}
			if m, argv := run("fails", corev1.PullAlways, true); !strings.HasPrefix(m, "125\nErrImagePull\nFailed to pull image") || !strings.Contains(m, "401") && !strings.Contains(m, "unauthorized") {
				t.Errorf("a failed pull: marker %q, calls %q", m, argv)
			}
			m, argv := run("first", corev1.PullIfNotPresent, false)
			if m != "0\n" || pulls(argv) != 1 || strings.Contains(argv, "s3cr3t") && rt == RuntimeApptainer {
				t.Errorf("first IfNotPresent: marker %q, calls %q", m, argv)
			}
			if rt == RuntimeEnroot && !strings.Contains(argv, "machine reg.example:5000 login user password s3cr3t") {
				t.Errorf("enroot got no credentials: %q", argv)
			}
			if m, argv := run("again", corev1.PullIfNotPresent, false); m != "0\n" || pulls(argv) != 0 {
				t.Errorf("second IfNotPresent pulled again: marker %q, calls %q", m, argv)
			}
			if m, argv := run("always", corev1.PullAlways, false); m != "0\n" || pulls(argv) != 1 {
				t.Errorf("Always: marker %q, calls %q", m, argv)
			}
		})
	}
}
