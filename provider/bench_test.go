package provider

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/slurmkube/slurm-vk/slurmclient"
	"github.com/slurmkube/slurm-vk/test/labenv"
)

// counting counts slurmrestd calls by method.
type counting struct {
	slurmclient.Interface
	states, jobs atomic.Int64
}

func (c *counting) JobStates(ctx context.Context, ids []slurmclient.JobID) ([]slurmclient.JobStatus, error) {
	c.states.Add(1)
	return c.Interface.JobStates(ctx, ids)
}

func (c *counting) Job(ctx context.Context, id slurmclient.JobID) (*slurmclient.Job, error) {
	c.jobs.Add(1)
	return c.Interface.Job(ctx, id)
}

// BenchmarkLabSync5000: the status cycle with SYNC_JOBS (default 5,000)
// tracked jobs, all held in Slurm. Reports slurmrestd requests per steady
// cycle, the cycle's median time, and the process's memory.
func BenchmarkLabSync5000(b *testing.B) {
	lab := labenv.Require(b)
	n := 5000
	if v, err := strconv.Atoi(os.Getenv("SYNC_JOBS")); err == nil && v > 0 {
		n = v
	}
	sc, err := slurmclient.New(slurmclient.Config{URL: lab.URL, User: lab.User, TokenFile: lab.TokenFile})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var ids []slurmclient.JobID
	b.Cleanup(func() {
		for _, id := range ids {
			sc.Cancel(ctx, id)
		}
	})
	for i := 0; i < n; i++ {
		id, err := sc.Submit(ctx, slurmclient.JobSpec{Script: "#!/bin/sh\ntrue\n", Name: "sync-bench", WorkDir: "/tmp",
			Env: []string{"PATH=/bin"}, Stdout: "/dev/null", Partition: lab.Partition, Hold: true})
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	c := &counting{Interface: sc}
	p := New(Config{TranslateConfig: TranslateConfig{NodeName: "bench", SharedRoot: "/tmp"}}, c, nil, lookups)
	for i, id := range ids {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "bench", Name: fmt.Sprintf("p%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i))},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "main"}}}}
		p.track(pod, id)
	}
	// The first cycle reads every job once (all are new).
	if err := p.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	var cycles []time.Duration
	var reqs []int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s0, j0 := c.states.Load(), c.jobs.Load()
		t0 := time.Now()
		if err := p.Sync(ctx); err != nil {
			b.Fatal(err)
		}
		cycles = append(cycles, time.Since(t0))
		reqs = append(reqs, c.states.Load()-s0+c.jobs.Load()-j0)
	}
	b.StopTimer()
	sort.Slice(cycles, func(i, j int) bool { return cycles[i] < cycles[j] })
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	maxReq := int64(0)
	for _, r := range reqs {
		maxReq = max(maxReq, r)
	}
	if maxReq > 1 {
		b.Errorf("a steady cycle made %d JobStates/Job calls, want 1", maxReq)
	}
	b.ReportMetric(float64(cycles[len(cycles)/2].Milliseconds()), "cycle-ms")
	b.ReportMetric(float64(maxReq), "max-requests/cycle")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(selfRSS())/(1<<20), "rss-MiB")
}

func selfRSS() int64 {
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}
