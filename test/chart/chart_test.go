// Package chart tests the Helm chart (charts/slurm-vk) with the pinned helm
// binary: lint, golden renderings, the values schema's refusals, the
// rendered objects against the Kubernetes API types, and every rendered
// slurm-vk config against the real binary's option parser.
//
// helm comes from HELM, or .cache/bin/helm (hack/tools/helm.sh builds it);
// without one the tests skip, or fail with HELM_REQUIRED=1.
// go test ./test/chart -update rewrites the goldens.
package chart

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/slurmkube/slurm-vk/internal/testbin"
	"github.com/slurmkube/slurm-vk/test/helmbin"
)

var update = flag.Bool("update", false, "rewrite the golden renderings")

const chartDir = "../../charts/slurm-vk"

func helm(t *testing.T) string { return helmbin.Path(t, os.Getenv("HELM_REQUIRED") == "1") }

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return string(out), nil
}

func render(t *testing.T, h, values string) string {
	t.Helper()
	out, err := run(t, h, "template", "slurm-vk", chartDir, "--namespace", "slurm-system", "-f", values)
	if err != nil {
		t.Fatalf("helm template -f %s: %v", values, err)
	}
	return out
}

func valuesFiles(t *testing.T) []string {
	files, err := filepath.Glob("testdata/values/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no values files: %v", err)
	}
	return files
}

func TestLint(t *testing.T) {
	h := helm(t)
	for _, f := range valuesFiles(t) {
		if out, err := run(t, h, "lint", "--strict", chartDir, "-f", f); err != nil {
			t.Errorf("helm lint -f %s: %v\n%s", f, err, out)
		}
	}
}

func TestGolden(t *testing.T) {
	h := helm(t)
	for _, f := range valuesFiles(t) {
		got := render(t, h, f)
		golden := filepath.Join("testdata/golden", filepath.Base(f))
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (go test ./test/chart -update writes it)", err)
		}
		if got != string(want) {
			t.Errorf("helm template -f %s differs from %s (go test ./test/chart -update, then review the diff):\n%s",
				f, golden, firstDiff(string(want), got))
		}
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		if i >= len(w) || i >= len(g) || w[i] != g[i] {
			at := func(l []string) string {
				if i < len(l) {
					return l[i]
				}
				return "<end>"
			}
			return fmt.Sprintf("line %d:\n  want %q\n  got  %q", i+1, at(w), at(g))
		}
	}
	return ""
}

// TestSchemaRejects renders each bad values file and expects the message
// named on its first line ("# want: ...").
func TestSchemaRejects(t *testing.T) {
	h := helm(t)
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d bad values files", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		first, _, _ := strings.Cut(string(b), "\n")
		want, ok := strings.CutPrefix(first, "# want: ")
		if !ok {
			t.Fatalf("%s: first line must be '# want: <message>'", f)
		}
		out, err := run(t, h, "template", "slurm-vk", chartDir, "-f", f)
		if err == nil {
			t.Errorf("%s: rendered, want the error %q:\n%.300s", f, want, out)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error lacks %q:\n%v", f, want, err)
		}
	}
}

// objects decodes a rendering strictly into API types: an unknown or
// misplaced field in a template fails here.
func objects(t *testing.T, rendered string) []runtime.Object {
	t.Helper()
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, doc := range strings.Split(rendered, "\n---\n") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		obj, _, err := dec.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("decode: %v\n%s", err, doc)
		}
		objs = append(objs, obj)
	}
	return objs
}

func TestRenderedObjects(t *testing.T) {
	h := helm(t)
	for _, f := range valuesFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			var values struct {
				Partitions []struct{ Name string }
			}
			b, _ := os.ReadFile(f)
			if err := yaml.Unmarshal(b, &values); err != nil {
				t.Fatal(err)
			}
			var deployments []*appsv1.Deployment
			var configs []*corev1.ConfigMap
			for _, o := range objects(t, render(t, h, f)) {
				switch o := o.(type) {
				case *appsv1.Deployment:
					deployments = append(deployments, o)
				case *corev1.ConfigMap:
					configs = append(configs, o)
				case *rbacv1.ClusterRole:
					checkClusterRole(t, o)
				}
			}
			if len(deployments) != len(values.Partitions) || len(configs) != len(values.Partitions) {
				t.Fatalf("%d partitions, %d Deployments, %d ConfigMaps", len(values.Partitions), len(deployments), len(configs))
			}
			for _, d := range deployments {
				checkDeployment(t, d)
			}
		})
	}
}

// checkDeployment: one replica that never overlaps with the next, secure
// defaults, and every mount backed by a volume.
func checkDeployment(t *testing.T, d *appsv1.Deployment) {
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("%s: want 1 replica and Recreate, got %v %s", d.Name, d.Spec.Replicas, d.Spec.Strategy.Type)
	}
	ps := d.Spec.Template.Spec
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot ||
		ps.SecurityContext.SeccompProfile == nil || ps.SecurityContext.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context %+v", d.Name, ps.SecurityContext)
	}
	volumes := map[string]bool{}
	for _, v := range ps.Volumes {
		volumes[v.Name] = true
	}
	for _, c := range ps.Containers {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("%s/%s: security context %+v", d.Name, c.Name, sc)
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				t.Errorf("%s/%s: mount %s has no volume", d.Name, c.Name, m.Name)
			}
			if m.SubPath != "" {
				t.Errorf("%s/%s: mount %s uses subPath: a rotated Secret would never reach it", d.Name, c.Name, m.Name)
			}
		}
	}
}

// checkClusterRole: nothing beyond what slurm-vk calls.
func checkClusterRole(t *testing.T, r *rbacv1.ClusterRole) {
	for _, rule := range r.Rules {
		for _, res := range rule.Resources {
			for _, verb := range rule.Verbs {
				switch {
				case res == "*" || verb == "*":
					t.Errorf("wildcard rule %+v", rule)
				case res == "nodes" && verb == "delete":
					t.Errorf("may delete nodes: %+v", rule)
				case (res == "nodes" || res == "nodes/status") && verb != "create" && len(rule.ResourceNames) == 0:
					t.Errorf("may %s any node: %+v", verb, rule)
				case (res == "secrets" || res == "configmaps") && !slices.Contains([]string{"get", "list", "watch"}, verb):
					t.Errorf("may %s %s: %+v", verb, res, rule)
				case res == "pods/exec" || res == "pods/attach" || res == "nodes/proxy" || strings.HasPrefix(res, "roles") ||
					strings.HasPrefix(res, "clusterroles"):
					t.Errorf("rule on %s: %+v", res, rule)
				}
			}
		}
	}
}

// TestConfigAcceptedByBinary runs slurm-vk -check on every rendered config:
// the chart and the binary agree on every option name and value format.
func TestConfigAcceptedByBinary(t *testing.T) {
	h := helm(t)
	bin := testbin.Path(t, "slurm-vk")
	want := map[string]map[string]string{ // values file → config key → expected, per node
		"multi.yaml": {
			"slurm-gpu-a100/nodeLabels":   "nvidia.com/gpu.product=A100,site.example/cluster=hpc1,site.example/tier=fast",
			"slurm-gpu-a100/nodeTaints":   "site.example/batch=true:PreferNoSchedule,nvidia.com/gpu:NoSchedule",
			"slurm-gpu-a100/maxPods":      "64",
			"slurm-gpu-a100/partition":    "gpu_a100",
			"slurm-cpu/maxPods":           "500",
			"slurm-cpu/queueFactor":       "4",
			"slurm-gpu-a100/queueFactor":  "1",
			"slurm-cpu/slurmCAFile":       "/var/run/slurm-vk/slurmrestd-ca/ca.crt",
			"slurm-cpu/fetchCAFile":       "/var/run/slurm-vk/fetch-ca/bundle.pem",
			"slurm-cpu/tlsCert":           "/var/run/slurm-vk/kubelet-tls/tls.crt",
			"slurm-cpu/metricsListen":     "",
			"slurm-cpu/verbose":           "true",
			"slurm-cpu/statusInterval":    "2s",
			"hpc-long/partition":          "Long.Queue",
			"slurm-cpu/allowedQOS":        "normal,long",
			"slurm-gpu-a100/allowedQOS":   "gpu",
			"slurm-cpu/allowedAccounts":   "*",
			"slurm-cpu/allowedRuntimes":   "none",
			"slurm-cpu/allowedPartitions": "",
		},
		"mapped.yaml": {
			"slurm-debug/tenancy": "map[mode:mapped namespaces:map[bank:map[account:finance tokenFile:/var/run/slurm-vk/tenants/bank/token user:bank] physics:map[user:phys]]]",
		},
		"minimal.yaml": {
			"slurm-debug/tenancy":        "map[mode:single]",
			"slurm-debug/clientCA":       "/var/run/slurm-vk/client-ca/ca.crt",
			"slurm-debug/metricsListen":  ":9090",
			"slurm-debug/nodeTaints":     "",
			"slurm-debug/statusInterval": "5s",
		},
	}
	for _, f := range valuesFiles(t) {
		seen := map[string]bool{}
		for _, o := range objects(t, render(t, h, f)) {
			cm, ok := o.(*corev1.ConfigMap)
			if !ok {
				continue
			}
			path := filepath.Join(t.TempDir(), "config.yaml")
			os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o644)
			out, err := run(t, bin, "-config", path, "-check")
			if err != nil {
				t.Errorf("%s: slurm-vk -check refuses ConfigMap %s: %v", f, cm.Name, err)
				continue
			}
			var eff map[string]any
			if err := yaml.Unmarshal([]byte(out), &eff); err != nil {
				t.Fatal(err)
			}
			node := fmt.Sprint(eff["nodeName"])
			for key, v := range want[filepath.Base(f)] {
				n, k, _ := strings.Cut(key, "/")
				if n != node {
					continue
				}
				seen[key] = true
				if got := fmt.Sprint(eff[k]); got != v {
					t.Errorf("%s: node %s: %s = %q, want %q", f, node, k, got, v)
				}
			}
		}
		for key := range want[filepath.Base(f)] {
			if !seen[key] {
				t.Errorf("%s: no config for %s", f, key)
			}
		}
	}
}
