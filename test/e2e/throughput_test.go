package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// TestE2EThroughput is bench/chain.sh: SLURM_VK_BENCH_PODS short pods
// through the whole chain (API server, scheduler, slurm-vk, slurm-fetchd,
// slurmrestd, Slurm) against the same number of jobs submitted straight to
// slurmrestd, in the same run, RUNS times interleaved: time to all
// submitted, time to all finished, and that no pod was lost or doubled.
// Skipped unless SLURM_VK_BENCH_PODS is set: a measurement, not a test.
func TestE2EThroughput(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SLURM_VK_BENCH_PODS"))
	if n == 0 {
		t.Skip("set SLURM_VK_BENCH_PODS (bench/chain.sh)")
	}
	runs, _ := strconv.Atoi(os.Getenv("SLURM_VK_BENCH_RUNS"))
	runs = max(runs, 1)
	c := setup(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", c.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	// A workflow engine's client: well above client-go's default 5 QPS.
	cfg.QPS, cfg.Burst = 500, 1000
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	user, err := slurmclient.New(slurmclient.Config{URL: c.lab.URL, TokenFile: c.lab.TokenFile, User: c.lab.User})
	if err != nil {
		t.Fatal(err)
	}
	var raw, chain [][2]time.Duration
	for run := range runs {
		rs, rf := c.rawThroughput(t, user, n, run)
		cs, cf := c.chainThroughput(t, kube, n, run)
		raw, chain = append(raw, [2]time.Duration{rs, rf}), append(chain, [2]time.Duration{cs, cf})
		t.Logf("run %d: raw submitted %v finished %v; chain submitted %v finished %v", run, raw[run][0], raw[run][1], chain[run][0], chain[run][1])
	}
	med := func(d [][2]time.Duration, i int) time.Duration {
		var v []time.Duration
		for _, x := range d {
			v = append(v, x[i])
		}
		sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
		return v[len(v)/2]
	}
	rs, rf, cs, cf := med(raw, 0), med(raw, 1), med(chain, 0), med(chain, 1)
	t.Logf("%d pods, %d runs, medians (lab %s):", n, runs, c.lab.Suite)
	t.Logf("  raw slurmrestd: all submitted %6.1fs (%6.1f jobs/s), all finished %6.1fs", rs.Seconds(), float64(n)/rs.Seconds(), rf.Seconds())
	t.Logf("  through chain:  all submitted %6.1fs (%6.1f pods/s), all finished %6.1fs", cs.Seconds(), float64(n)/cs.Seconds(), cf.Seconds())
	t.Logf("  chain/raw: submission rate %.2f, time to all finished %.2f", rs.Seconds()/cs.Seconds(), cf.Seconds()/rf.Seconds())
}

// workers is how many submit at once, in both paths: virtual-kubelet's
// default pod sync workers.
const workers = 10

// rawThroughput submits n jobs of `true` to slurmrestd from workers
// goroutines and waits for all to end.
func (c *cluster) rawThroughput(t *testing.T, s *slurmclient.Client, n, run int) (submitted, finished time.Duration) {
	ctx := context.Background()
	dir := filepath.Join(c.root, fmt.Sprintf("bench-raw-%d", run))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, c.lab.UID, c.lab.UID)
	ids := make([]slurmclient.JobID, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	began := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				id, err := s.Submit(ctx, slurmclient.JobSpec{Script: "#!/bin/sh\ntrue\n", Name: "bench-raw", Comment: fmt.Sprintf("bench-raw-%d-%d", run, i),
					WorkDir: dir, Env: []string{"PATH=/usr/bin:/bin"}, Stdout: "/dev/null", Partition: c.lab.Partition})
				if err != nil {
					errs <- err
					return
				}
				ids[i] = id
			}
		}()
	}
	wg.Wait()
	submitted = time.Since(began)
	select {
	case err := <-errs:
		t.Fatalf("raw submit: %v", err)
	default:
	}
	c.waitFor("the raw jobs to end", 30*time.Minute, func() bool {
		st, err := s.JobStates(ctx, ids)
		if err != nil {
			return false
		}
		done := 0
		for _, j := range st {
			if j.State.Terminal() {
				done++
			}
		}
		return done == n
	})
	return submitted, time.Since(began)
}

// chainThroughput creates n pods of `true` on the node from workers
// goroutines, as a workflow engine would, and waits for every pod to have a
// job in Slurm (submitted) and to succeed (finished); each pod must have
// exactly one job.
func (c *cluster) chainThroughput(t *testing.T, kube kubernetes.Interface, n, run int) (submitted, finished time.Duration) {
	ctx := context.Background()
	ns := fmt.Sprintf("bench-%d-%d", run, time.Now().UnixNano()%100000)
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// SLURM_VK_BENCH_BOUND=1 binds the pods to the node at creation, past
	// the scheduler (whose API rate limit is then out of the measurement).
	bound := os.Getenv("SLURM_VK_BENCH_BOUND") == "1"
	pod := func(i int) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%05d", i), Labels: map[string]string{"bench": ns}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, NodeSelector: map[string]string{"kubernetes.io/hostname": nodeName},
				Tolerations: []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}},
				Containers:  []corev1.Container{{Name: "main", Image: "none", Command: []string{"true"}}}}}
		if bound {
			p.Spec.NodeName = nodeName
		}
		return p
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if _, err := kube.CoreV1().Pods(ns).Create(ctx, pod(i), metav1.CreateOptions{}); err != nil {
					t.Errorf("create pod %d: %v", i, err)
					return
				}
			}
		}()
	}
	// Jobs of this namespace's pods, by pod UID (the comment's end).
	jobsOf := func() map[string][]slurmclient.JobID {
		jobs, err := c.admin().Jobs(ctx, slurmclient.JobFilter{})
		if err != nil {
			return nil
		}
		by := map[string][]slurmclient.JobID{}
		for _, j := range jobs {
			if strings.Contains(j.Comment, ":"+ns+"/") {
				uid := j.Comment[strings.LastIndex(j.Comment, ":")+1:]
				by[uid] = append(by[uid], j.ID)
			}
		}
		return by
	}
	c.waitFor("every pod to have a job in Slurm", 30*time.Minute, func() bool { return len(jobsOf()) >= n })
	submitted = time.Since(began)
	wg.Wait()
	c.waitFor("every pod to succeed", 30*time.Minute, func() bool {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
		if err != nil {
			return false
		}
		ok := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodSucceeded {
				ok++
			}
		}
		return ok == n
	})
	finished = time.Since(began)
	// Where the time went, to the second: the last pod created, bound by
	// the scheduler, started by Slurm.
	if pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); err == nil {
		var created, bound, started time.Time
		for _, p := range pods.Items {
			created = later(created, p.CreationTimestamp.Time)
			for _, cd := range p.Status.Conditions {
				if cd.Type == corev1.PodScheduled {
					bound = later(bound, cd.LastTransitionTime.Time)
				}
			}
			if p.Status.StartTime != nil {
				started = later(started, p.Status.StartTime.Time)
			}
		}
		t.Logf("run %d: last pod created at +%v, bound at +%v, given a start time at +%v", run,
			created.Sub(began).Round(time.Second), bound.Sub(began).Round(time.Second), started.Sub(began).Round(time.Second))
	}
	for uid, ids := range jobsOf() {
		if len(ids) != 1 {
			t.Errorf("pod %s has jobs %v, want one", uid, ids)
		}
	}
	return submitted, finished
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
