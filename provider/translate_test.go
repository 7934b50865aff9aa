package provider

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var testCfg = TranslateConfig{
	NodeName: "slurm-debug", Partition: "debug", SharedRoot: "/shared/vk", Runtime: RuntimeNone,
	HostPathPrefixes: []string{"/scratch"}, AllowedOptions: []string{"nice", "exclusive"},
	Allowed: Allowed{Runtimes: []string{AllowAny}, Accounts: []string{"physics"}, QOS: []string{"high"}},
}

var lookups = Lookups{
	ConfigMap: func(ns, name string) (*corev1.ConfigMap, error) {
		if name == "app-config" {
			return &corev1.ConfigMap{Data: map[string]string{"app.yaml": "level: debug\n", "MODE": "fast"}}, nil
		}
		return nil, fmt.Errorf("configmaps %q not found", name)
	},
	Secret: func(ns, name string) (*corev1.Secret, error) {
		if name == "db" {
			return &corev1.Secret{Data: map[string][]byte{"password": []byte("hunter2-TOP-SECRET\n"), "user": []byte("admin")}}, nil
		}
		return nil, fmt.Errorf("secrets %q not found", name)
	},
}

func basePod(name string, containers ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: "11111111-2222-3333-4444-555555555555",
			Labels: map[string]string{"app": "demo"}},
		Spec: corev1.PodSpec{Containers: containers, RestartPolicy: corev1.RestartPolicyNever},
	}
}

func quantity(s string) resource.Quantity { return resource.MustParse(s) }

func goldenPods() map[string]*corev1.Pod {
	hostile := basePod("hostile", corev1.Container{
		Name:       "main",
		Command:    []string{"/bin/echo"},
		Args:       []string{`it's "quoted"`, "$(NAME)", "$$(NAME)", "`id`", "$(rm -rf /)", "a;b|c&d", "new\nline", "$HOME"},
		Env:        []corev1.EnvVar{{Name: "NAME", Value: `O'Brien $USER`}},
		WorkingDir: "/tmp/dir with 'quotes'",
	})
	secrets := basePod("secrets", corev1.Container{
		Name:    "app",
		Command: []string{"sh", "-c", "cat $SLURM_VK_MOUNT_CONFIG/app.yaml; echo $DB_USER"},
		Env: []corev1.EnvVar{
			{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
			{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}, Key: "MODE"}}},
		},
		EnvFrom:      []corev1.EnvFromSource{{Prefix: "DB_", SecretRef: &corev1.SecretEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}}}},
		VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/app"}, {Name: "creds", MountPath: "/etc/creds"}, {Name: "scratch", MountPath: "/work"}},
	})
	secrets.Spec.Volumes = []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "app-config"}}}},
		{Name: "creds", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "db"}}},
		{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
		{Name: "info", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
			{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}}},
	}
	multi := basePod("multi",
		corev1.Container{Name: "web", Command: []string{"sleep", "1"}, Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: quantity("1500m"), corev1.ResourceMemory: quantity("1Gi")}}},
		corev1.Container{Name: "sidecar", Command: []string{"true"}, Resources: corev1.ResourceRequirements{
			Limits: corev1.ResourceList{corev1.ResourceCPU: quantity("1"), corev1.ResourceMemory: quantity("100M"), "nvidia.com/gpu": quantity("2")}}},
	)
	multi.Spec.InitContainers = []corev1.Container{{Name: "setup", Command: []string{"echo", "init"}, Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: quantity("4")}}}}
	deadline := int64(90)
	multi.Spec.ActiveDeadlineSeconds = &deadline
	multi.Annotations = map[string]string{AnnotationAccount: "physics", AnnotationQOS: "high", AnnotationOptions: `{"nice": 10}`}

	apptainer := basePod("apptainer", corev1.Container{Name: "main", Image: "ghcr.io/acme/solver:1.2", Args: []string{"--steps", "10"},
		VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data", ReadOnly: true}}})
	apptainer.Annotations = map[string]string{AnnotationRuntime: RuntimeApptainer}
	apptainer.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/scratch/datasets"}}}}
	podman := basePod("podman", corev1.Container{Name: "main", Image: "docker.io/library/python:3", Command: []string{"python", "-c"}, Args: []string{"print('hi')"},
		Env: []corev1.EnvVar{{Name: "A", Value: "1"}}})
	podman.Annotations = map[string]string{AnnotationRuntime: RuntimePodman}
	enroot := basePod("enroot", corev1.Container{Name: "main", Image: "nvcr.io/nvidia/pytorch:24.01", Command: []string{"nvidia-smi"}})
	enroot.Annotations = map[string]string{AnnotationRuntime: RuntimeEnroot}
	charliecloud := basePod("charliecloud", corev1.Container{Name: "main", Image: "ghcr.io/acme/solver:1.2", Args: []string{"--steps", "10"},
		Env: []corev1.EnvVar{{Name: "A", Value: "1"}, {Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}}},
		VolumeMounts: []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}})
	charliecloud.Annotations = map[string]string{AnnotationRuntime: RuntimeCharliecloud}
	charliecloud.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	// A job of tasks: 2 nodes of 2 tasks, each task the podman container.
	shaped := basePod("shaped", corev1.Container{Name: "ranks", Image: "docker.io/library/mpi:1", Command: []string{"hello"}, Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: quantity("8"), corev1.ResourceMemory: quantity("4Gi"), "nvidia.com/gpu": quantity("4")}}})
	shaped.Spec.InitContainers = []corev1.Container{{Name: "stage", Command: []string{"true"}, Image: "docker.io/library/busybox:1"}}
	shaped.Annotations = map[string]string{AnnotationRuntime: RuntimePodman, AnnotationNodes: "2", AnnotationTasksPerNode: "2",
		AnnotationTaskLabels: "true", AnnotationExclusive: "true", AnnotationMPI: "pmix"}
	return map[string]*corev1.Pod{"hostile": hostile, "secrets": secrets, "multi": multi, "apptainer": apptainer, "podman": podman, "enroot": enroot,
		"charliecloud": charliecloud, "shaped": shaped}
}

// golden renders a plan for comparison: the spec (without the script), the
// staged files (contents of secrets included: they go to 0600 files, never
// to the script), and the script.
func golden(p *Plan) string {
	spec := p.Spec
	script := spec.Script
	spec.Script = ""
	js, _ := json.MarshalIndent(spec, "", "  ")
	var b strings.Builder
	fmt.Fprintf(&b, "## job spec\n%s\n## staged files\n", js)
	for _, f := range p.Staged {
		fmt.Fprintf(&b, "%04o %s %q\n", f.Mode, f.Path, f.Data)
	}
	fmt.Fprintf(&b, "## script\n%s", script)
	return b.String()
}

func TestTranslateGolden(t *testing.T) {
	for name, pod := range goldenPods() {
		t.Run(name, func(t *testing.T) {
			plan, err := Translate(pod, testCfg, lookups)
			if err != nil {
				t.Fatal(err)
			}
			got := golden(plan)
			file := filepath.Join("testdata", "translate", name+".golden")
			if *update {
				os.MkdirAll(filepath.Dir(file), 0o755)
				if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run go test ./provider -run TestTranslateGolden -update)", err)
			}
			if got != string(want) {
				t.Errorf("translation of %s differs from %s (rerun with -update and review the diff):\n%s", name, file, got)
			}
			if strings.Contains(plan.Spec.Script, "hunter2") || strings.Contains(strings.Join(plan.Spec.Env, " "), "hunter2") {
				t.Error("a secret value is in the job script or the job's environment")
			}
			if out, err := exec.Command("bash", "-n", "-c", plan.Spec.Script).CombinedOutput(); err != nil {
				t.Errorf("bash -n: %v: %s", err, out)
			}
		})
	}
}

// TestHostileStringsRunVerbatim runs the generated script with bash (runtime
// none) and checks each argument arrives byte for byte, nothing expanded
// but the kubelet's own $(VAR).
func TestHostileStringsRunVerbatim(t *testing.T) {
	root := t.TempDir()
	cfg := testCfg
	cfg.SharedRoot = root
	pod := goldenPods()["hostile"]
	pod.Spec.Containers[0].Command = []string{"/usr/bin/printf", "[%s]\n"}
	pod.Spec.Containers[0].WorkingDir = ""
	plan, err := Translate(pod, cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", plan.Spec.Script)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/home/x", "USER=u"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v: %s", err, out)
	}
	ref := PodRef(pod)
	log, err := os.ReadFile(ref.Path(root, "main", "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	want := "[it's \"quoted\"]\n[O'Brien $USER]\n[$(NAME)]\n[`id`]\n[$(rm -rf /)]\n[a;b|c&d]\n[new\nline]\n[$HOME]\n"
	if string(log) != want {
		t.Errorf("arguments arrived as\n%s\nwant\n%s", log, want)
	}
	if exit, _ := os.ReadFile(ref.Path(root, "main", "0.exit")); string(exit) != "0\n" {
		t.Errorf("exit marker %q", exit)
	}
}

func TestTranslateRejects(t *testing.T) {
	pvc := basePod("pvc", corev1.Container{Name: "main", Command: []string{"true"}})
	pvc.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "c"}}}}
	hostPath := basePod("hostpath", corev1.Container{Name: "main", Command: []string{"true"}})
	hostPath.Spec.Volumes = []corev1.Volume{{Name: "etc", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/scratch/../etc"}}}}
	missingSecret := basePod("nosecret", corev1.Container{Name: "main", Command: []string{"true"}, Env: []corev1.EnvVar{
		{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}}}})
	noCommand := basePod("nocmd", corev1.Container{Name: "main", Image: "busybox"})
	badOption := basePod("badopt", corev1.Container{Name: "main", Command: []string{"true"}})
	badOption.Annotations = map[string]string{AnnotationOptions: `{"begin_time": 1}`}
	badRuntime := basePod("badrt", corev1.Container{Name: "main", Command: []string{"true"}})
	badRuntime.Annotations = map[string]string{AnnotationRuntime: "docker"}
	badEnv := basePod("badenv", corev1.Container{Name: "main", Command: []string{"true"}, Env: []corev1.EnvVar{{Name: "my=var", Value: "x"}}})
	// #28: a volume name that is a path (only the API server's check
	// stood in the way: the emptyDir was the bind /etc:/hostetc).
	escapingVolume := basePod("escvol", corev1.Container{Name: "main", Command: []string{"true"},
		VolumeMounts: []corev1.VolumeMount{{Name: "../../../../etc", MountPath: "/hostetc"}}})
	escapingVolume.Spec.Volumes = []corev1.Volume{{Name: "../../../../etc", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	reservedEnv := basePod("resenv", corev1.Container{Name: "main", Command: []string{"true"}, Env: []corev1.EnvVar{{Name: "svk_podman", Value: "/tmp/x"}}})
	// $( repeated: its expansion cost the square of its length.
	hugeRefs := basePod("hugerefs", corev1.Container{Name: "main", Command: []string{"true"}, Env: []corev1.EnvVar{{Name: "X", Value: strings.Repeat("$(", 512<<10)}}})
	// $(A) where A is large, many times: gigabytes from a 1.5 MiB pod.
	big := []corev1.EnvVar{{Name: "A", Value: strings.Repeat("a", 100<<10)}}
	for i := range 30 {
		big = append(big, corev1.EnvVar{Name: fmt.Sprintf("B%d", i), Value: "$(A)"})
	}
	amplified := basePod("amplified", corev1.Container{Name: "main", Command: []string{"true"}, Env: big})
	enrootBlank := basePod("enrootblank", corev1.Container{Name: "main", Image: "busybox", Command: []string{"true"},
		VolumeMounts: []corev1.VolumeMount{{Name: "cfg", MountPath: "/etc/app none rbind", ReadOnly: true}}})
	enrootBlank.Annotations = map[string]string{AnnotationRuntime: RuntimeEnroot}
	enrootBlank.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
	nulAnnotation := basePod("nulann", corev1.Container{Name: "main", Command: []string{"true"}, Env: []corev1.EnvVar{
		{Name: "A", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['h']"}}}}})
	nulAnnotation.Annotations = map[string]string{"h": "a\x00b"} // a NUL would end the value at exec
	amplifiedArgs := basePod("ampargs", corev1.Container{Name: "main", Command: []string{"true"}, Args: []string{strings.Repeat("$(A)", 3)}, Env: big[:1]})
	// Each container within its bound, the pod not: 4 x 1.6 MiB.
	many := basePod("many", corev1.Container{Name: "main", Command: []string{"true"}, Env: big[:16]})
	for _, n := range []string{"b", "c", "d"} {
		many.Spec.Containers = append(many.Spec.Containers, corev1.Container{Name: n, Command: []string{"true"}, Env: big[:16]})
	}
	for _, tt := range []struct {
		pod    *corev1.Pod
		reason string
	}{
		{many, "ScriptTooLarge"},
		{pvc, "UnsupportedVolume"},
		{hostPath, "HostPathNotAllowed"},
		{missingSecret, "SecretKeyNotFound"},
		{noCommand, "NoCommand"},
		{badOption, "OptionNotAllowed"},
		{badRuntime, "UnsupportedRuntime"},
		{badEnv, "InvalidEnvName"},
		{escapingVolume, "InvalidVolumeName"},
		{reservedEnv, "InvalidEnvName"},
		{hugeRefs, "InvalidEnvValue"},
		{amplified, "InvalidEnvValue"},
		{amplifiedArgs, "InvalidContainer"},
		{enrootBlank, "InvalidMountPath"},
		{nulAnnotation, "InvalidFieldRef"},
	} {
		_, err := Translate(tt.pod, testCfg, lookups)
		var ip *InvalidPodError
		if !errors.As(err, &ip) || ip.Reason != tt.reason || ip.Message == "" {
			t.Errorf("%s: err = %v, want reason %s", tt.pod.Name, err, tt.reason)
		}
	}
}

func TestJobComment(t *testing.T) {
	pod := basePod("p")
	c := JobComment("node-a", pod)
	ns, name, uid, ok := ParseJobComment("node-a", c)
	if !ok || ns != "default" || name != "p" || uid != string(pod.UID) {
		t.Errorf("round trip of %q: %s %s %s %v", c, ns, name, uid, ok)
	}
	if _, _, _, ok := ParseJobComment("node-b", c); ok {
		t.Error("another node's job parsed as ours")
	}
}

// TestSecretReferencesExpandWhenTheJobRuns: $(VAR) naming a Secret-backed
// variable expands, as on a kubelet, but only when the job runs: the value
// is read from its staged 0600 file and never written into the script.
func TestSecretReferencesExpandWhenTheJobRuns(t *testing.T) {
	root := t.TempDir()
	cfg := testCfg
	cfg.SharedRoot = root
	cfg.Runtime = RuntimeNone
	pod := basePod("refs", corev1.Container{
		Name:    "main",
		Command: []string{"/usr/bin/printf", "[%s]\n"},
		Args:    []string{"--password=$(DB_PASSWORD)", "$(DSN)", "$$(DB_PASSWORD)", "it's $(DB_PASSWORD)$(DB_PASSWORD)", "$(DB_PASSWORD"},
		Env: []corev1.EnvVar{
			{Name: "DB_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
			{Name: "DSN", Value: "admin:$(DB_PASSWORD)@db"},
		},
	})
	plan, err := Translate(pod, cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(plan.Spec.Script, "hunter2") {
		t.Fatalf("the secret is in the script:\n%s", plan.Spec.Script)
	}
	ref := PodRef(pod)
	for _, f := range plan.Staged { // what the fetch endpoint would have written
		p := ref.Path(root, layout.Staged(f.Path))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, f.Data, os.FileMode(f.Mode)); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("bash", "-c", plan.Spec.Script)
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("script: %v: %s", err, out)
	}
	log, err := os.ReadFile(ref.Path(root, "main", "0.log"))
	if err != nil {
		t.Fatal(err)
	}
	pw := "hunter2-TOP-SECRET\n"
	want := "[--password=" + pw + "]\n[admin:" + pw + "@db]\n[$(DB_PASSWORD)]\n[it's " + pw + pw + "]\n[$(DB_PASSWORD]\n"
	if string(log) != want {
		t.Errorf("arguments arrived as\n%q\nwant\n%q", log, want)
	}
}

// TestAllowLists: an annotation that changes where or how a job runs may
// choose only what its node allows; the refusal names the annotation and
// what is allowed.
func TestAllowLists(t *testing.T) {
	cfg := TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimePodman,
		Allowed: Allowed{Partitions: []string{"long"}, Accounts: []string{AllowAny}, QOS: []string{"normal"}}}
	for _, tt := range []struct {
		name        string
		annotations map[string]string
		wantErr     string // "" to run
	}{
		{"the node's own runtime and partition", map[string]string{AnnotationRuntime: RuntimePodman, AnnotationPartition: "debug"}, ""},
		{"a listed partition", map[string]string{AnnotationPartition: "long"}, ""},
		{"any account", map[string]string{AnnotationAccount: "someone-elses-grant"}, ""},
		{"a listed qos", map[string]string{AnnotationQOS: "normal"}, ""},
		{"runtime none on a podman node", map[string]string{AnnotationRuntime: RuntimeNone}, `annotation slurm-vk.io/runtime: "none" is not allowed on this node (allowed: podman)`},
		{"another partition", map[string]string{AnnotationPartition: "admin-only"}, `slurm-vk.io/partition: "admin-only" is not allowed on this node (allowed: debug, long)`},
		{"an unlisted qos", map[string]string{AnnotationQOS: "urgent"}, `slurm-vk.io/qos: "urgent" is not allowed on this node (allowed: normal)`},
		{"a reservation, none allowed", map[string]string{AnnotationReservation: "maint"}, `slurm-vk.io/reservation: "maint" is not allowed on this node (allowed: no value`},
		{"a constraint, none allowed", map[string]string{AnnotationConstraint: "bigmem"}, `slurm-vk.io/constraint: "bigmem" is not allowed`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod := basePod("p", corev1.Container{Name: "main", Image: "busybox", Command: []string{"true"}})
			pod.Annotations = tt.annotations
			plan, err := Translate(pod, cfg, lookups)
			var ip *InvalidPodError
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr == "" && plan.Spec.Partition == "":
				t.Fatal("no partition")
			case tt.wantErr != "" && (!errors.As(err, &ip) || ip.Reason != ReasonAnnotationNotAllowed || !strings.Contains(ip.Message, tt.wantErr)):
				t.Fatalf("err = %v, want %s: %s", err, ReasonAnnotationNotAllowed, tt.wantErr)
			}
		})
	}
}

// TestReservedOptions: the options annotation never sets a field slurm-vk
// sets itself or one an allow-listed annotation decides, even where the
// node's -allowed-options were to list it.
func TestReservedOptions(t *testing.T) {
	cfg := testCfg
	cfg.AllowedOptions = append([]string{"nice"}, ReservedOptions...)
	for _, k := range []string{"account", "partition", "qos", "comment", "script", "environment", "user_id", "current_working_directory", "standard_output"} {
		pod := basePod("p", corev1.Container{Name: "main", Command: []string{"true"}})
		pod.Annotations = map[string]string{AnnotationOptions: fmt.Sprintf(`{%q: "x"}`, k)}
		_, err := Translate(pod, cfg, lookups)
		var ip *InvalidPodError
		if !errors.As(err, &ip) || ip.Reason != "OptionNotAllowed" {
			t.Errorf("options %s: err = %v, want OptionNotAllowed", k, err)
		}
	}
}
