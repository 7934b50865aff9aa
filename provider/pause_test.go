package provider

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// TestPodmanPauseProcessIsShared: a podman job ends the user's pause
// process at its end only when no other job of the user on the node holds
// the shared lock on podman's runtime directory. Ending it under another
// job's podman (pulling, creating: no container running yet) failed that
// job with "invalid internal status" (seen with the e2e suite). A job alone
// on the node resets a state left broken (containers whose conmon was
// killed, no pause process), which otherwise fails every later job.
func TestPodmanPauseProcessIsShared(t *testing.T) {
	if _, err := exec.LookPath("flock"); err != nil {
		t.Fatal("flock (util-linux) is needed")
	}
	dir := t.TempDir()
	bin, xdg := filepath.Join(dir, "bin"), filepath.Join(dir, "xdg")
	os.Mkdir(bin, 0o755)
	os.MkdirAll(filepath.Join(xdg, "libpod", "tmp"), 0o700)
	// A podman with no container running: pull, create and start succeed;
	// with $BROKEN it fails as podman does when its state names running
	// containers whose conmon is gone, until system migrate resets it.
	broken := filepath.Join(dir, "broken")
	os.WriteFile(filepath.Join(bin, "podman"), []byte(`#!/bin/sh
if [ -e "$BROKEN" ]; then
	[ "$1 $2" = "system migrate" ] && { rm "$BROKEN"; exit 0; }
	echo 'level=error msg="invalid internal status, try resetting the pause process with \"podman system migrate\": could not find any running process: no such process"' >&2
	exit 1
fi
exit 0
`), 0o755)
	pause := exec.Command("sleep", "300")
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { pause.Wait(); close(exited) }()
	t.Cleanup(func() { pause.Process.Kill() })
	os.WriteFile(filepath.Join(xdg, "libpod", "tmp", "pause.pid"), []byte(strconv.Itoa(pause.Process.Pid)), 0o600)

	cfg := testCfg
	cfg.Runtime, cfg.SharedRoot = RuntimePodman, filepath.Join(dir, "shared")
	run := func(name string) {
		t.Helper()
		pod := basePod(name, corev1.Container{Name: "main", Image: "reg.example:5000/lab/app:1", Command: []string{"true"}})
		plan, err := Translate(pod, cfg, lookups)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("bash", "-c", plan.Spec.Script)
		cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "XDG_RUNTIME_DIR=" + xdg, "HOME=" + dir, "SLURM_JOB_ID=7", "BROKEN=" + broken}
		out, err := cmd.CombinedOutput()
		if _, broke := os.Stat(broken); err != nil && broke != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
	}
	alive := func() bool {
		select {
		case <-exited:
			return false
		default:
			return pause.Process.Signal(syscall.Signal(0)) == nil
		}
	}

	// Another job holds the lock (between its svk_begin and svk_end).
	other, err := os.Open(xdg)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(other.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(broken, nil, 0o600)
	run("ends-while-another-runs")
	if !alive() {
		t.Fatal("a job ended the pause process while another job of the user held the lock")
	}
	if _, err := os.Stat(broken); err != nil {
		t.Fatal("a job reset podman's state (system migrate) while another job of the user held the lock")
	}
	other.Close()
	run("ends-last")
	if _, err := os.Stat(broken); err == nil {
		t.Error("a job alone on the node left podman's state broken (no system migrate)")
	}
	if alive() {
		t.Error("the last job to end left the pause process running")
	}
}
