package provider

import (
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestEnvNamesThatAreNotShellNames: names a kubelet takes but bash cannot
// hold (envFrom keys like "data-1", with a prefix like "p-"; any printable
// ASCII but '=') reach the container under their own names, from
// literals, ConfigMaps and Secrets, and $(VAR) references to them expand,
// on every runtime that can pass them. apptainer (which takes the
// environment as APPTAINERENV_NAME) and enroot (which starts the
// container through its /bin/sh: dash drops such names) refuse them with
// a reason.
func TestEnvNamesThatAreNotShellNames(t *testing.T) {
	shims := shimDir(t)
	ps := podStrings{args: []string{"$(H_p-v)", "$(H.data-v)", "$(H_my var.x)"}, lit: "l", cm: "c'$(H_LIT)", secret: "s3cret\n\n", ann: "n", workingDir: t.TempDir(), evil: "`touch CANARY`",
		extra: []corev1.EnvVar{{Name: "H_my var.x", Value: "literal $(H_SECRET)"}, {Name: "H_tab-in-value", Value: "a\tb"}, {Name: "H_ref", Value: "$(H_p-v)/$(H.data-v)"}},
		envFrom: []corev1.EnvFromSource{
			{Prefix: "H_p-", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}},
			{Prefix: "H.data-", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "c"}}},
		}}
	want := map[string]string{"H_p-v": ps.secret, "H_p-evil": ps.evil, "H.data-v": ps.cm, "H_my var.x": "literal " + ps.secret, "H_tab-in-value": "a\tb", "H_SECRET": ps.secret,
		"H_ref": ps.secret + "/" + ps.cm}
	wantArgs := []string{ps.secret, ps.cm, "$(H_my var.x)"} // a name with a blank is not a reference (see expand)
	for _, rt := range allRuntimes {
		t.Run(rt, func(t *testing.T) {
			calls, err := runTraced(t, shims, traceRoot(t), t.TempDir(), rt, ps)
			if rt == RuntimeApptainer || rt == RuntimeEnroot {
				var bad *InvalidPodError
				if !errors.As(err, &bad) || bad.Reason != "InvalidEnvName" {
					t.Fatalf("%s: %v, want InvalidEnvName", rt, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var payload *call
			for i := range calls {
				if calls[i].Name == payloadName {
					payload = &calls[i]
				}
			}
			if payload == nil {
				t.Fatalf("the container never ran: %v", calls)
			}
			for k, v := range want {
				if got, ok := payload.Env[k]; !ok || got != v {
					t.Errorf("the container's %q = %q (set: %v), want %q", k, got, ok, v)
				}
			}
			if len(payload.Args) != len(wantArgs) {
				t.Fatalf("args %q, want %q", payload.Args, wantArgs)
			}
			for i := range wantArgs {
				if payload.Args[i] != wantArgs[i] {
					t.Errorf("arg %d = %q, want %q", i, payload.Args[i], wantArgs[i])
				}
			}
		})
	}
}
