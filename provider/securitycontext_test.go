package provider

import (
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestSecurityContext: readOnlyRootFilesystem and allowPrivilegeEscalation
// false reach each runtime as its own flags (podman --read-only without
// its tmpfs and no-new-privileges, enroot without --rw, setpriv for
// runtime none), or are refused with a reason where a runtime cannot
// honour them; a privileged container is refused.
func TestSecurityContext(t *testing.T) {
	yes, no := true, false
	pod := func(rt string, sc *corev1.SecurityContext) *corev1.Pod {
		p := basePod("sc", corev1.Container{Name: "main", Image: "busybox", Command: []string{"true"}, SecurityContext: sc})
		p.Annotations = map[string]string{AnnotationRuntime: rt}
		return p
	}
	ro := &corev1.SecurityContext{ReadOnlyRootFilesystem: &yes}
	nnp := &corev1.SecurityContext{AllowPrivilegeEscalation: &no}
	for _, tt := range []struct {
		rt           string
		sc           *corev1.SecurityContext
		want, unwant []string
	}{
		{RuntimePodman, ro, []string{"'--read-only' '--read-only-tmpfs=false'"}, []string{"no-new-privileges"}},
		{RuntimePodman, nnp, []string{"'--security-opt=no-new-privileges'"}, []string{"--read-only"}},
		{RuntimePodman, nil, nil, []string{"--read-only", "no-new-privileges"}},
		{RuntimeEnroot, ro, []string{"exec 'enroot' 'start' '--"}, []string{"'--rw'"}},
		{RuntimeEnroot, nil, []string{"'enroot' 'start' '--rw'"}, nil},
		{RuntimeNone, nnp, []string{"exec 'setpriv' '--no-new-privs' '--' 'true'"}, nil},
		{RuntimeNone, nil, []string{"exec 'true'"}, []string{"setpriv"}},
	} {
		plan, err := Translate(pod(tt.rt, tt.sc), testCfg, lookups)
		if err != nil {
			t.Fatalf("%s %+v: %v", tt.rt, tt.sc, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(plan.Spec.Script, w) {
				t.Errorf("%s %+v: the script lacks %q", tt.rt, tt.sc, w)
			}
		}
		for _, u := range tt.unwant {
			if strings.Contains(plan.Spec.Script, u) {
				t.Errorf("%s %+v: the script has %q", tt.rt, tt.sc, u)
			}
		}
	}
	for _, tt := range []struct {
		rt, reason string
		sc         *corev1.SecurityContext
	}{
		{RuntimeCharliecloud, "ReadOnlyRootNotSupported", ro},
		{RuntimeNone, "ReadOnlyRootNotSupported", ro},
		{RuntimePodman, "PrivilegedNotSupported", &corev1.SecurityContext{Privileged: &yes}},
	} {
		_, err := Translate(pod(tt.rt, tt.sc), testCfg, lookups)
		var bad *InvalidPodError
		if !errors.As(err, &bad) || bad.Reason != tt.reason {
			t.Errorf("%s %+v: %v, want %s", tt.rt, tt.sc, err, tt.reason)
		}
	}
	if _, err := Translate(pod(RuntimePodman, &corev1.SecurityContext{Privileged: &no}), testCfg, lookups); err != nil {
		t.Errorf("privileged: false: %v", err)
	}
}
