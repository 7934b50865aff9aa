package provider

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/server"
	"github.com/slurmkube/slurm-vk/slurmclient"
)

// TestVolumesFollowTheirSources: while a pod runs, its configMap,
// projected (Secret and downward API) and optional configMap volumes
// follow their sources through a real fetch endpoint on real files: a
// changed key is rewritten, a removed one goes, a new one comes, an
// optional ConfigMap created later appears and goes again when it is
// deleted, a label change reaches the downward API file; unchanged files
// are left alone, and a required ConfigMap deleted leaves its files as
// they were.
func TestVolumesFollowTheirSources(t *testing.T) {
	root := t.TempDir()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t"), 0o600)
	url := fetchtest.Start(t, server.Config{Root: root, TokenFile: tok})
	files, err := fetchclient.New(fetchclient.Config{URL: url, TokenFile: tok})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	cms := map[string]map[string]string{"cfg": {"a": "1", "b": "2", "keep": "k"}}
	secret := map[string][]byte{"pw": []byte("old")}
	gone := func(what, name string) error {
		return apierrors.NewNotFound(schema.GroupResource{Resource: what}, name)
	}
	look := Lookups{
		ConfigMap: func(_, name string) (*corev1.ConfigMap, error) {
			mu.Lock()
			defer mu.Unlock()
			d, ok := cms[name]
			if !ok {
				return nil, gone("configmaps", name)
			}
			cp := map[string]string{}
			for k, v := range d {
				cp[k] = v
			}
			return &corev1.ConfigMap{Data: cp}, nil
		},
		Secret: func(_, name string) (*corev1.Secret, error) {
			mu.Lock()
			defer mu.Unlock()
			return &corev1.Secret{Data: map[string][]byte{"pw": append([]byte(nil), secret["pw"]...)}}, nil
		},
	}
	now := time.Now()
	f := newFakeSlurm()
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: root, Runtime: RuntimeNone},
		Now: func() time.Time { return now }}, f, files, look)
	yes := true
	pod := tenantPod("ns", "u-vol")
	pod.Labels = map[string]string{"tier": "one"}
	pod.Spec.Volumes = []corev1.Volume{
		{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
		{Name: "later", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "later"}, Optional: &yes}}},
		{Name: "proj", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
			{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "s"}}},
			{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}}}}},
		}}}},
	}
	ctx := context.Background()
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	st, _ := p.get("ns", "p")
	f.set(st.job, slurmclient.StateRunning, "")
	vol := func(parts ...string) string {
		return PodRef(pod).Path(root, layout.Staged(filepath.Join(append([]string{layout.StagedVolume(parts[0])}, parts[1:]...)...)))
	}
	read := func(parts ...string) (string, bool) {
		b, err := os.ReadFile(vol(parts...))
		return string(b), err == nil
	}
	inode := func(parts ...string) uint64 {
		fi, err := os.Stat(vol(parts...))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if got, _ := read("cfg", "a"); got != "1" {
		t.Fatalf("staged at create: a = %q", got)
	}
	if fi, err := os.Stat(vol("later")); err != nil || !fi.IsDir() {
		t.Fatalf("the volume of an optional ConfigMap that does not exist: %v, want an empty directory (containers bind it)", err)
	}
	keepIno := inode("cfg", "keep")
	sync := func() {
		t.Helper()
		now = now.Add(volumeRefresh)
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}

	mu.Lock()
	cms["cfg"] = map[string]string{"a": "1 changed", "keep": "k", "c": "new"}
	cms["later"] = map[string]string{"x": "came later"}
	secret["pw"] = []byte("new")
	mu.Unlock()
	updated, _ := p.GetPod(ctx, "ns", "p")
	updated.Labels = map[string]string{"tier": "two"}
	p.UpdatePod(ctx, updated)
	sync()
	for _, c := range []struct {
		parts []string
		want  string
	}{
		{[]string{"cfg", "a"}, "1 changed"}, {[]string{"cfg", "c"}, "new"}, {[]string{"later", "x"}, "came later"},
		{[]string{"proj", "pw"}, "new"}, {[]string{"proj", "labels"}, "tier=\"two\"\n"},
	} {
		if got, ok := read(c.parts...); !ok || got != c.want {
			t.Errorf("%v = %q (exists %v), want %q", c.parts, got, ok, c.want)
		}
	}
	if _, ok := read("cfg", "b"); ok {
		t.Error("a key removed from the ConfigMap is still in the volume")
	}
	if inode("cfg", "keep") != keepIno {
		t.Error("an unchanged file was written again")
	}

	mu.Lock()
	delete(cms, "later") // optional: its files go
	delete(cms, "cfg")   // required: the pod does not translate now, its files stay
	mu.Unlock()
	sync()
	if got, ok := read("cfg", "a"); !ok || got != "1 changed" {
		t.Errorf("a required ConfigMap deleted: cfg/a = %q (exists %v), want it kept", got, ok)
	}
	mu.Lock()
	cms["cfg"] = map[string]string{"a": "1 changed", "keep": "k", "c": "new"}
	mu.Unlock()
	sync()
	if _, ok := read("later", "x"); ok {
		t.Error("the optional ConfigMap was deleted, its file is still in the volume")
	}

	// Not before volumeRefresh has passed since the last look.
	mu.Lock()
	cms["cfg"]["a"] = "too soon"
	mu.Unlock()
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := read("cfg", "a"); got == "too soon" {
		t.Error("volumes refreshed within volumeRefresh of the last look")
	}
}

// BenchmarkVolumeRefresh: what one volume refresh costs a pod without its
// I/O (translation, then the digests of its volume files) beside the
// translation CreatePod makes of it, the baseline, in the same run. The
// pod has a ConfigMap volume of 10 keys of 1 KiB.
func BenchmarkVolumeRefresh(b *testing.B) {
	data := map[string]string{}
	for i := range 10 {
		data[string(rune('a'+i))] = strings.Repeat("x", 1<<10)
	}
	look := Lookups{ConfigMap: func(_, _ string) (*corev1.ConfigMap, error) { return &corev1.ConfigMap{Data: data}, nil }}
	pod := tenantPod("ns", "u-bench")
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	cfg := TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}
	b.Run("translate", func(b *testing.B) {
		for b.Loop() {
			if _, err := Translate(pod, cfg, look); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			plan, err := Translate(pod, cfg, look)
			if err != nil {
				b.Fatal(err)
			}
			digests(volumeFiles(plan.Staged))
		}
	})
}
