package provider

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// logFiles serves one log for every container.
type logFiles struct{ noFiles }

func (logFiles) Logs(_ context.Context, p layout.Pod, c string, _ fetchclient.LogOptions) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(p.Dir() + "/" + c)), nil
}

// TestLogsOfPodsThatEndedBeforeARestart: virtual-kubelet does not hand a
// restarted provider the pods that had already ended, yet kubectl logs of
// them works, as on a kubelet; pods of other nodes and pods still running
// are not served that way.
func TestLogsOfPodsThatEndedBeforeARestart(t *testing.T) {
	pods := map[string]*corev1.Pod{}
	for name, c := range map[string]struct {
		node  string
		phase corev1.PodPhase
	}{"ended": {"n", corev1.PodSucceeded}, "failed": {"n", corev1.PodFailed}, "elsewhere": {"other", corev1.PodSucceeded}, "running": {"n", corev1.PodRunning}} {
		p := tenantPod("ns", "u-"+name)
		p.Name, p.Spec.NodeName, p.Status.Phase = name, c.node, c.phase
		pods[name] = p
	}
	look := lookups
	look.Pod = func(_, name string) (*corev1.Pod, error) {
		if p, ok := pods[name]; ok {
			return p, nil
		}
		return nil, errors.New("not found")
	}
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "n", Partition: "debug", SharedRoot: "/s", Runtime: RuntimeNone}}, newFakeSlurm(), logFiles{}, look)
	for name, want := range map[string]bool{"ended": true, "failed": true, "elsewhere": false, "running": false, "unknown": false} {
		rc, err := p.GetContainerLogs(context.Background(), "ns", name, "main", apiOpts())
		if (err == nil) != want {
			t.Errorf("%s: err = %v, want served: %v", name, err, want)
			continue
		}
		if err == nil {
			b, _ := io.ReadAll(rc)
			if want := "ns_" + name + "_u-" + name + "/main"; string(b) != want {
				t.Errorf("%s: read %q, want %q", name, b, want)
			}
		}
	}
}
