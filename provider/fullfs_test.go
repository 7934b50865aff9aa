package provider

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/server"
	"github.com/slurmkube/slurm-vk/internal/testenv"
)

// TestFullFileSystemWhileStaging: the fetch endpoint's file system fills
// up while a pod's Secret is staged. The pod waits with a reason that
// says so, nothing is submitted, no partial file is left, its delete
// leaves nothing behind, and once there is room a pod runs.
func TestFullFileSystemWhileStaging(t *testing.T) {
	testenv.NeedRoot(t, "mount a small tmpfs")
	root := t.TempDir()
	if err := syscall.Mount("tmpfs", root, "tmpfs", 0, "size=256k,mode=0711"); err != nil {
		t.Fatalf("mount a 256 KiB tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(root, syscall.MNT_DETACH) })
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t"), 0o600)
	url := fetchtest.Start(t, server.Config{Root: root, TokenFile: tok})
	files, err := fetchclient.New(fetchclient.Config{URL: url, TokenFile: tok, RetryFor: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	size := 400 << 10 // more than the file system holds
	look := Lookups{Secret: func(_, _ string) (*corev1.Secret, error) {
		return &corev1.Secret{Data: map[string][]byte{"blob": make([]byte, size)}}, nil
	}}
	f := newFakeSlurm()
	var last *corev1.Pod
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: root, Runtime: RuntimeNone}}, f, files, look)
	p.NotifyPods(context.Background(), func(pod *corev1.Pod) { last = pod })
	mk := func(uid string) *corev1.Pod {
		pod := tenantPod("ns", uid)
		pod.Spec.Volumes = []corev1.Volume{{Name: "blob", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "s"}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "blob", MountPath: "/blob"}}
		return pod
	}
	ctx := context.Background()
	pod := mk("u-full")
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err) // it waits and is retried by the sync loop, not failed
	}
	if last == nil || last.Status.Phase != corev1.PodPending || last.Status.Reason != ReasonStagingFailed || !strings.Contains(last.Status.Message, "no space left") {
		t.Errorf("the pod's status: %+v, want Pending, %s, saying the file system is full", last.Status, ReasonStagingFailed)
	}
	if f.count("submit") != 0 {
		t.Error("a job was submitted for a pod whose files could not be staged")
	}
	var left []string
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp-") {
			left = append(left, path)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("partial files left: %v", left)
	}
	if err := p.DeletePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("left after the delete: %v", entries)
	}
	size = 16 << 10
	if err := p.CreatePod(ctx, mk("u-room")); err != nil || f.count("submit") != 1 {
		t.Errorf("with room again: %v, %d submits", err, f.count("submit"))
	}
}
