package provider

import (
	"errors"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// TestEtcHosts: the job script writes the pod's /etc/hosts as a kubelet
// does (managed, or the node's for hostNetwork, with hostAliases after
// the kubelet's line) and each runtime binds it at /etc/hosts in a
// container that does not mount its own; runtime none refuses
// hostAliases, and aliases that are not addresses and names are refused.
func TestEtcHosts(t *testing.T) {
	shims := shimDir(t)
	aliases := []corev1.HostAlias{{IP: "123.45.67.89", Hostnames: []string{"foo", "bar"}}, {IP: "fd00::1", Hostnames: []string{"v6.example"}}}
	wantAliases := "\n# Entries added by HostAliases.\n123.45.67.89\tfoo\tbar\nfd00::1\tv6.example\n"
	node, _ := os.ReadFile("/etc/hosts")
	for _, hostNetwork := range []bool{false, true} {
		for _, rt := range []string{RuntimePodman, RuntimeApptainer, RuntimeEnroot, RuntimeCharliecloud} {
			name := rt
			if hostNetwork {
				name += "/hostNetwork"
			}
			t.Run(name, func(t *testing.T) {
				root := traceRoot(t)
				var pod *corev1.Pod
				ps := podStrings{args: []string{"a"}, lit: "l", cm: "c", secret: "s", ann: "n", workingDir: t.TempDir(),
					pod: func(p *corev1.Pod) {
						p.Spec.HostAliases, p.Spec.HostNetwork = aliases, hostNetwork
						pod = p
					}}
				calls, err := runTraced(t, shims, root, t.TempDir(), rt, ps)
				if err != nil {
					t.Fatal(err)
				}
				hosts := PodRef(pod).Path(root, layout.HostsFile)
				b, err := os.ReadFile(hosts)
				if err != nil {
					t.Fatal(err)
				}
				got := string(b)
				if hostNetwork {
					if want := managedHostsHeaderHostNetwork + string(node) + wantAliases; got != want {
						t.Errorf("hosts file\n%q\nwant\n%q", got, want)
					}
				} else {
					prefix := managedHostsHeader + managedHostsLocal
					rest, ok := strings.CutPrefix(got, prefix)
					line, aliasPart, _ := strings.Cut(rest, "\n")
					ip, host, _ := strings.Cut(line, "\t")
					if !ok || ip == "" || host != "trace" || aliasPart != wantAliases {
						t.Errorf("hosts file\n%q\nwant the kubelet's lines, the node's address and the pod's name, then %q", got, wantAliases)
					}
				}
				// The runtime binds it at /etc/hosts.
				bound := false
				for _, c := range calls {
					if c.Name == rt || rt == RuntimeCharliecloud && c.Name == "ch-run" || rt == RuntimePodman && c.Name == "podman" {
						for _, a := range c.Argv {
							bound = bound || strings.Contains(a, hosts) && strings.Contains(a, "/etc/hosts")
						}
					}
				}
				if !bound {
					t.Errorf("no runtime command line binds %s at /etc/hosts", hosts)
				}
			})
		}
	}
	t.Run("a container that mounts its own", func(t *testing.T) {
		pod := basePod("own", corev1.Container{Name: "main", Image: "busybox", Command: []string{"true"},
			VolumeMounts: []corev1.VolumeMount{{Name: "h", MountPath: "/etc/hosts"}}})
		pod.Annotations = map[string]string{AnnotationRuntime: RuntimePodman}
		pod.Spec.Volumes = []corev1.Volume{{Name: "h", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		plan, err := Translate(pod, testCfg, lookups)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(plan.Spec.Script, ":/etc/hosts"); n != 1 {
			t.Errorf("%d binds at /etc/hosts, want the container's own only", n)
		}
	})
	for _, tt := range []struct {
		name, runtime, reason string
		aliases               []corev1.HostAlias
	}{
		{"none", RuntimeNone, "UnsupportedHostAliases", aliases},
		{"not an address", RuntimePodman, "InvalidHostAliases", []corev1.HostAlias{{IP: "1.2.3.4\n5.6.7.8 evil", Hostnames: []string{"a"}}}},
		{"not a name", RuntimePodman, "InvalidHostAliases", []corev1.HostAlias{{IP: "1.2.3.4", Hostnames: []string{"a\tb"}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := basePod("bad", corev1.Container{Name: "main", Image: "busybox", Command: []string{"true"}})
			pod.Annotations = map[string]string{AnnotationRuntime: tt.runtime}
			pod.Spec.HostAliases = tt.aliases
			_, err := Translate(pod, testCfg, lookups)
			var bad *InvalidPodError
			if !errors.As(err, &bad) || bad.Reason != tt.reason {
				t.Errorf("%v, want %s", err, tt.reason)
			}
		})
	}
}
