package provider

import (
	"context"
	"strings"
	"testing"

	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// attemptFiles reports one container's attempts.
type attemptFiles struct {
	noFiles
	c fetchclient.Container
}

func (a attemptFiles) Containers(_ context.Context, _ layout.Pod, names []string) (map[string]fetchclient.Container, error) {
	return map[string]fetchclient.Container{names[0]: a.c}, nil
}

// TestLogAttempt: --previous is the container lastState names: the latest
// attempt while the job waits to restart it, else the one before; none is
// the kubelet's "not found" (400).
func TestLogAttempt(t *testing.T) {
	code := func(c int) *int { return &c }
	dead := fetchclient.Info{Attempt: 0, Exists: true, Exited: true, ExitCode: code(3)}
	running := fetchclient.Info{Attempt: 1, Exists: true}
	for _, tt := range []struct {
		name          string
		policy        corev1.RestartPolicy
		c             fetchclient.Container
		previous, end bool
		want          int
		wantErr       bool
	}{
		{"current", corev1.RestartPolicyAlways, fetchclient.Container{Current: running, Previous: &dead}, false, false, 1, false},
		{"previous of a running attempt", corev1.RestartPolicyAlways, fetchclient.Container{Current: running, Previous: &dead}, true, false, 0, false},
		{"previous in a back-off: the attempt that died", corev1.RestartPolicyAlways, fetchclient.Container{Current: dead}, true, false, 0, false},
		{"previous of the only attempt, not restarted", corev1.RestartPolicyNever, fetchclient.Container{Current: dead}, true, false, 0, true},
		{"previous after the job ended", corev1.RestartPolicyAlways, fetchclient.Container{Current: dead}, true, true, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := New(Config{TranslateConfig: testCfg}, newFakeSlurm(), attemptFiles{c: tt.c}, lookups)
			pod := basePod("p", corev1.Container{Name: "main"})
			pod.Spec.RestartPolicy = tt.policy
			got, err := p.logAttempt(context.Background(), pod, "main", tt.previous, tt.end)
			if tt.wantErr {
				if !errdefs.IsInvalidInput(err) {
					t.Errorf("err %v, want invalid input (400)", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("attempt %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

// failingFiles answers every containers request with err.
type failingFiles struct {
	noFiles
	err error
}

func (f failingFiles) Containers(context.Context, layout.Pod, []string) (map[string]fetchclient.Container, error) {
	return nil, f.err
}

// TestLogsErrorsClassified: what the fetch endpoint refuses or does not
// have reaches kubectl as 400 or 404 with the reason, not as a 500.
func TestLogsErrorsClassified(t *testing.T) {
	for _, tt := range []struct {
		name  string
		err   error
		check func(error) bool
	}{
		{"not a plain file", &fetchclient.Error{Kind: fetchclient.ErrForbidden, Status: 403, Reason: "log is not a plain file inside the pod directory"}, errdefs.IsInvalidInput},
		{"no pod directory", &fetchclient.Error{Kind: fetchclient.ErrNotFound, Status: 404, Reason: "pod directory does not exist"}, errdefs.IsNotFound},
		{"server fault", &fetchclient.Error{Status: 500, Reason: "file system error"}, func(err error) bool { return !errdefs.IsInvalidInput(err) && !errdefs.IsNotFound(err) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			p := New(Config{TranslateConfig: testCfg}, newFakeSlurm(), failingFiles{err: tt.err}, lookups)
			pod := basePod("logs-"+strings.ReplaceAll(tt.name, " ", "-"), corev1.Container{Name: "main", Command: []string{"true"}})
			if err := p.CreatePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			_, err := p.GetContainerLogs(ctx, pod.Namespace, pod.Name, "main", api.ContainerLogOpts{})
			if err == nil || !tt.check(err) || !errdefs.IsNotFound(err) && !strings.Contains(err.Error(), tt.err.(*fetchclient.Error).Reason) {
				t.Errorf("err %v: not classified as wanted", err)
			}
		})
	}
}

func TestFirstHost(t *testing.T) {
	for list, want := range map[string]string{"c1": "c1", "c1,c2": "c1", "c[1-3]": "c1", "c[07,9]": "c07", "node[001-004],gpu1": "node001", "": ""} {
		if got := firstHost(list); got != want {
			t.Errorf("firstHost(%q) = %q, want %q", list, got, want)
		}
	}
}
