package provider

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestContainerRejects: pod strings that would reach a runtime as an
// option, a second bind or shell text are refused before anything is
// written, with a reason naming the problem.
func TestContainerRejects(t *testing.T) {
	nulLookups := Lookups{
		ConfigMap: func(ns, name string) (*corev1.ConfigMap, error) {
			return &corev1.ConfigMap{Data: map[string]string{"GREETING": "hi\x00X:-$(touch /tmp/pwned)\x00"}}, nil
		},
		Secret: lookups.Secret,
	}
	cmRef := &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}, Key: "GREETING"}}
	secretEnv := func(name string) corev1.EnvVar {
		return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}
	}
	emptyDir := []corev1.Volume{{Name: "d", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	for _, tt := range []struct {
		name    string
		runtime string
		c       corev1.Container
		look    Lookups
		reason  string
	}{
		{"image read as an option", RuntimePodman, corev1.Container{Image: "--privileged"}, lookups, "InvalidImageName"},
		{"image with a space", RuntimeApptainer, corev1.Container{Image: "busybox --bind /:/h"}, lookups, "InvalidImageName"},
		{"image with uppercase repository", RuntimeEnroot, corev1.Container{Image: "Busybox"}, lookups, "InvalidImageName"},
		{"mountPath with a comma: a second apptainer bind", RuntimeApptainer, corev1.Container{Image: "busybox",
			VolumeMounts: []corev1.VolumeMount{{Name: "d", MountPath: "/data,/:/hostroot"}}}, lookups, "InvalidMountPath"},
		{"mountPath with a colon: podman volume options", RuntimePodman, corev1.Container{Image: "busybox",
			VolumeMounts: []corev1.VolumeMount{{Name: "d", MountPath: "/data:rw,exec"}}}, lookups, "InvalidMountPath"},
		{"relative mountPath", RuntimePodman, corev1.Container{Image: "busybox",
			VolumeMounts: []corev1.VolumeMount{{Name: "d", MountPath: "data"}}}, lookups, "InvalidMountPath"},
		{"relative workingDir", RuntimePodman, corev1.Container{Image: "busybox", WorkingDir: "x"}, lookups, "InvalidWorkingDir"},
		{"NUL in a ConfigMap value used as env", RuntimeNone, corev1.Container{Command: []string{"true"},
			Env: []corev1.EnvVar{{Name: "GREETING", ValueFrom: cmRef}}}, nulLookups, "InvalidEnvValue"},
		{"NUL in envFrom", RuntimeNone, corev1.Container{Command: []string{"true"},
			EnvFrom: []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}}}, nulLookups, "InvalidEnvValue"},
		{"NUL in a value", RuntimeNone, corev1.Container{Command: []string{"true"},
			Env: []corev1.EnvVar{{Name: "A", Value: "x\x00$(id)\x00"}}}, lookups, "InvalidEnvValue"},
		{"NUL in args", RuntimePodman, corev1.Container{Image: "busybox", Args: []string{"\x00A\x00"}}, lookups, "InvalidContainer"},
		{"a Secret may not steer podman", RuntimePodman, corev1.Container{Image: "busybox", Env: []corev1.EnvVar{secretEnv("CONTAINERS_CONF")}}, lookups, "InvalidEnvName"},
		{"a Secret may not set podman's PATH", RuntimePodman, corev1.Container{Image: "busybox", Env: []corev1.EnvVar{secretEnv("PATH")}}, lookups, "InvalidEnvName"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.c.Name = "main"
			pod := basePod("rej", tt.c)
			pod.Spec.Volumes = emptyDir
			cfg := testCfg
			cfg.Runtime = tt.runtime
			plan, err := Translate(pod, cfg, tt.look)
			var ip *InvalidPodError
			if !errors.As(err, &ip) || ip.Reason != tt.reason || ip.Message == "" {
				script := ""
				if plan != nil {
					script = plan.Spec.Script
				}
				t.Errorf("err = %v, want reason %s\n%s", err, tt.reason, script)
			}
		})
	}
}

// TestImagesNormalized: runtimes get the full reference a kubelet would
// pull (docker.io/library/..., :latest when untagged), and enroot its own
// registry#image form.
func TestImagesNormalized(t *testing.T) {
	for _, tt := range []struct{ image, full, enroot string }{
		{"busybox", "docker.io/library/busybox:latest", "docker://docker.io#library/busybox:latest"},
		{"nvcr.io/nvidia/pytorch:24.01", "nvcr.io/nvidia/pytorch:24.01", "docker://nvcr.io#nvidia/pytorch:24.01"},
		{"127.0.0.1:6850/lab/app:1", "127.0.0.1:6850/lab/app:1", "docker://127.0.0.1:6850#lab/app:1"},
		{"ghcr.io/a/b@sha256:" + strings.Repeat("ab", 32), "ghcr.io/a/b@sha256:" + strings.Repeat("ab", 32), "docker://ghcr.io#a/b@sha256:" + strings.Repeat("ab", 32)},
	} {
		c := resolved{name: "main", image: tt.image}
		if err := c.validateForContainer(); err != nil {
			t.Fatal(err)
		}
		if c.image != tt.full || enrootURI(c.image) != tt.enroot {
			t.Errorf("%s: %s and %s, want %s and %s", tt.image, c.image, enrootURI(c.image), tt.full, tt.enroot)
		}
	}
}

// TestPodmanEnvNeverInTheLaunchingShell: a pod's PATH goes to podman's
// command line, so the shell that starts podman keeps its own.
func TestPodmanEnvNeverInTheLaunchingShell(t *testing.T) {
	cfg := testCfg
	cfg.Runtime = RuntimePodman
	pod := basePod("path", corev1.Container{Name: "main", Image: "busybox", Env: []corev1.EnvVar{{Name: "PATH", Value: "/opt/conda/bin"}, {Name: "HOME", Value: "/nowhere"}}})
	plan, err := Translate(pod, cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	_, body, _ := strings.Cut(plan.Spec.Script, "c_main() {")
	for _, bad := range []string{"export", "PATH=/opt/conda/bin\n"} {
		if strings.Contains(body, bad) {
			t.Errorf("the container's function sets %q in the shell that starts podman:\n%s", bad, body)
		}
	}
	for _, want := range []string{"'--env' 'PATH=/opt/conda/bin'", "'--env' 'HOME=/nowhere'"} {
		if !strings.Contains(plan.Spec.Script, want) {
			t.Errorf("script lacks %s", want)
		}
	}
}
