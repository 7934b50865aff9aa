package provider

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestSecretsOffCommandLines (#28): a Secret referred to in args (and
// under a name a shell cannot hold) is on no command line of a process
// the job script starts, but the container's own and the runtime
// client's that hands it over and then execs or exits: podman create
// (not podman start, which lives as long as the container), ch-run,
// apptainer, enroot start and, for runtime none, env(1), each until it
// execs the container (the chart README's security model says which).
// A value that refers to the Secret has it, on every runtime.
func TestSecretsOffCommandLines(t *testing.T) {
	shims := shimDir(t)
	const secret = "s3cret-0ff-the-argv"
	// H_DSN: a value that refers to a Secret (apptainer's APPTAINERENV_
	// channel too, #28).
	ps := podStrings{args: []string{"--password=$(H_SECRET)"}, lit: "l", cm: "c", secret: secret, ann: "n", evil: "e",
		extra: []corev1.EnvVar{{Name: "H_DSN", Value: "db://u:$(H_SECRET)@h"}}}
	handover := map[string]func(c call) bool{
		RuntimePodman:       func(c call) bool { return c.Name == "podman" && c.Argv[0] == "create" },
		RuntimeCharliecloud: func(c call) bool { return c.Name == "ch-run" },
		RuntimeApptainer:    func(c call) bool { return c.Name == "apptainer" && (c.Argv[0] == "exec" || c.Argv[0] == "run") },
		RuntimeEnroot:       func(c call) bool { return c.Name == "enroot" && c.Argv[0] == "start" },
		RuntimeNone:         func(c call) bool { return c.Name == "env" },
	}
	for _, rt := range allRuntimes {
		t.Run(rt, func(t *testing.T) {
			p := ps
			p.workingDir = t.TempDir()
			if rt == RuntimePodman || rt == RuntimeCharliecloud || rt == RuntimeNone {
				// and under a name bash cannot hold
				p.envFrom = []corev1.EnvFromSource{{Prefix: "H_p-", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}}}
				p.args = append(p.args, "$(H_p-v)")
			}
			calls, err := runTraced(t, shims, traceRoot(t), t.TempDir(), rt, p)
			if err != nil {
				t.Fatal(err)
			}
			ran, seen := false, false
			for _, c := range calls {
				if c.Name == payloadName {
					ran = strings.Join(c.Args, " ") == "--password="+secret+strings.Repeat(" "+secret, len(p.args)-1)
					if c.Env["H_DSN"] != "db://u:"+secret+"@h" {
						t.Errorf("the container's H_DSN = %q, want the Secret in it", c.Env["H_DSN"])
					}
					continue
				}
				if strings.Contains(strings.Join(c.Argv, "\x00"), secret) {
					if !handover[rt](c) {
						t.Errorf("the Secret is on the command line of %s %q", c.Name, c.Argv)
					}
					seen = true
				}
			}
			if !seen {
				t.Errorf("no runtime client had the Secret on its command line: does the trace record whole command lines? %v", calls)
			}
			if !ran {
				t.Errorf("the container did not get the Secret in its args: %v", calls)
			}
		})
	}
}
