package provider

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// TestLabContainerStartOverhead measures, per runtime, the time from a
// container's launch in the job (its log file created by the job script)
// to its first output line, on the lab: runtime none is the baseline, each
// run interleaves the runtimes, and the table gives medians and ratios.
// It asserts nothing: run by bench/containers.sh (SLURM_VK_BENCH_RUNS=N).
func TestLabContainerStartOverhead(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("SLURM_VK_BENCH_RUNS"))
	if runs <= 0 {
		t.Skip("a measurement, not a test: bench/containers.sh runs it (SLURM_VK_BENCH_RUNS=N)")
	}
	r := newLabRig(t)
	runtimes := []string{RuntimeNone, RuntimePodman, RuntimeCharliecloud}
	for _, rt := range runtimes[1:] {
		r.lab.RequireRuntime(t, rt)
	}
	r.cfg.StatusInterval = time.Second
	p := r.start()
	ctx := context.Background()
	image := r.lab.Registry + "/lab/busybox:1"
	samples := map[string][]time.Duration{}
	for i := 0; i < runs; i++ {
		for _, rt := range runtimes {
			pod := labPod(fmt.Sprintf("start-%s-%d", rt, i), corev1.Container{Name: "main", Image: image,
				ImagePullPolicy: corev1.PullIfNotPresent, Command: []string{"echo", "first"}})
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			if err := p.CreatePod(ctx, pod); err != nil {
				t.Fatal(err)
			}
			d, err := firstLine(PodRef(pod).Path(r.cfg.SharedRoot, layout.LogFile("main", 0)))
			if err != nil {
				t.Fatal(err)
			}
			samples[rt] = append(samples[rt], d)
			r.waitFor(t, pod, "succeeded", phase(corev1.PodSucceeded))
			p.DeletePod(ctx, pod)
		}
	}
	base := median(samples[RuntimeNone])
	fmt.Printf("\ncontainer start overhead, Slurm %s, %d runs each (launch -> first output line)\n", r.lab.Version, runs)
	// The baseline is near the poll's resolution (1 ms), so the table
	// gives each runtime's overhead as the difference of medians.
	fmt.Printf("%-13s %10s %10s %10s %14s\n", "runtime", "median", "min", "max", "over none")
	for _, rt := range runtimes {
		s := samples[rt]
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		fmt.Printf("%-13s %10v %10v %10v %14v\n", rt, median(s).Round(100*time.Microsecond), s[0].Round(100*time.Microsecond),
			s[len(s)-1].Round(100*time.Microsecond), (median(s) - base).Round(100*time.Microsecond))
	}
}

// firstLine polls a log file: the time from its creation being seen to its
// first byte being seen (both by the same 1 ms poll).
func firstLine(path string) (time.Duration, error) {
	deadline := time.Now().Add(3 * time.Minute)
	var created time.Time
	for time.Now().Before(deadline) {
		fi, err := os.Stat(path)
		now := time.Now()
		if err == nil && created.IsZero() {
			created = now
		}
		if err == nil && fi.Size() > 0 {
			return now.Sub(created), nil
		}
		time.Sleep(time.Millisecond)
	}
	return 0, fmt.Errorf("%s: no output within 3 minutes", path)
}

func median(s []time.Duration) time.Duration {
	c := append([]time.Duration(nil), s...)
	sort.Slice(c, func(i, j int) bool { return c[i] < c[j] })
	if len(c) == 0 {
		return 0
	}
	return c[len(c)/2]
}
