package provider

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestSubPathExpr: a mount's subPathExpr is expanded with the container's
// environment, as a kubelet does; one that expands to an absolute path or
// to ".." leaves the pod waiting with CreateContainerConfigError (it is
// retried: its env may change), and one that refers to a Secret-backed
// variable is refused.
func TestSubPathExpr(t *testing.T) {
	pod := func(value string, env ...corev1.EnvVar) *corev1.Pod {
		p := basePod("subpath", corev1.Container{Name: "main", Command: []string{"true"},
			Env:          append([]corev1.EnvVar{{Name: "POD_NAME", Value: value}}, env...),
			VolumeMounts: []corev1.VolumeMount{{Name: "w", MountPath: "/logs", SubPathExpr: "$(POD_NAME)/x"}}})
		p.Spec.Volumes = []corev1.Volume{{Name: "w", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		return p
	}
	plan, err := Translate(pod("pod-a"), testCfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan.Spec.Script, "/_work/w/pod-a/x") {
		t.Errorf("the script does not mount the expanded subpath w/pod-a/x:\n%s", plan.Spec.Script)
	}
	for _, v := range []string{"..", "/tmp", "a/../.."} {
		_, err := Translate(pod(v), testCfg, lookups)
		var bad *InvalidPodError
		if !errors.As(err, &bad) || bad.Reason != "CreateContainerConfigError" || !bad.Missing {
			t.Errorf("POD_NAME=%q: %v, want a waiting CreateContainerConfigError", v, err)
		}
	}
	secret := pod("x")
	secret.Spec.Containers[0].Env[0] = corev1.EnvVar{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "user"}}}
	_, err = Translate(secret, testCfg, lookups)
	var bad *InvalidPodError
	if !errors.As(err, &bad) || bad.Reason != "InvalidSubPath" {
		t.Errorf("a Secret-backed reference: %v, want InvalidSubPath", err)
	}
}
