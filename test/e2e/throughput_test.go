package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
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
	metrics := freeAddr(t)
	extra := []string{"-metrics-listen", metrics}
	if w := os.Getenv("SLURM_VK_BENCH_WORKERS"); w != "" {
		extra = append(extra, "-pod-sync-workers", w)
	}
	c := setup(t, extra...)
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
	var api []time.Duration
	for run := range runs {
		rs, rf := c.rawThroughput(t, user, n, run)
		as := apiThroughput(t, kube, n, run)
		cs, cf := c.chainThroughput(t, kube, "http://"+metrics+"/metrics", n, run)
		raw, chain = append(raw, [2]time.Duration{rs, rf}), append(chain, [2]time.Duration{cs, cf})
		api = append(api, as)
		t.Logf("run %d: raw submitted %v finished %v; API server alone created %v; chain submitted %v finished %v",
			run, raw[run][0], raw[run][1], as, chain[run][0], chain[run][1])
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
	sort.Slice(api, func(a, b int) bool { return api[a] < api[b] })
	as := api[len(api)/2]
	t.Logf("%d pods, %d runs, medians (lab %s):", n, runs, c.lab.Suite)
	t.Logf("  raw slurmrestd: all submitted %6.1fs (%6.1f jobs/s), all finished %6.1fs", rs.Seconds(), float64(n)/rs.Seconds(), rf.Seconds())
	t.Logf("  API server alone: all created %6.1fs (%6.1f pods/s)", as.Seconds(), float64(n)/as.Seconds())
	t.Logf("  through chain:  all submitted %6.1fs (%6.1f pods/s), all finished %6.1fs", cs.Seconds(), float64(n)/cs.Seconds(), cf.Seconds())
	t.Logf("  chain/raw: submission rate %.2f, time to all finished %.2f", rs.Seconds()/cs.Seconds(), cf.Seconds()/rf.Seconds())
	t.Logf("  chain/API server alone: submission rate %.2f", as.Seconds()/cs.Seconds())
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
	cpu0 := cpuByProcess()
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
	t.Logf("run %d: raw, while submitting: %s", run, cpuShare(cpu0, cpuByProcess(), submitted))
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
		// A job missing from the answer ended more than MinJobAge (5
		// minutes) ago: slurmctld has forgotten it.
		live := 0
		for _, j := range st {
			if !j.State.Terminal() {
				live++
			}
		}
		return live == 0
	})
	return submitted, time.Since(began)
}

// chainThroughput creates n pods of `true` on the node from workers
// goroutines, as a workflow engine would, and waits for every pod's job to
// be submitted (slurm-vk's count of submits slurmrestd accepted, at
// metrics: asking Slurm for its whole job list four times a second would
// load the very slurmrestd measured) and to succeed (finished); each pod
// must then have exactly one job in Slurm.
func (c *cluster) chainThroughput(t *testing.T, kube kubernetes.Interface, metrics string, n, run int) (submitted, finished time.Duration) {
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
	submits0 := submits(t, metrics)
	cpu0 := cpuByProcess()
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
	for deadline := time.Now().Add(30 * time.Minute); submits(t, metrics)-submits0 < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pods submitted in 30 minutes", submits(t, metrics)-submits0, n)
		}
	}
	submitted = time.Since(began)
	t.Logf("run %d: chain, while submitting: %s", run, cpuShare(cpu0, cpuByProcess(), submitted))
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

// apiThroughput creates n pods from workers goroutines, bound at creation
// to a node nothing serves, and reports the time to all created: what the
// API server (and etcd) alone take, the ceiling of any chain through them.
func apiThroughput(t *testing.T, kube kubernetes.Interface, n, run int) time.Duration {
	ctx := context.Background()
	ns := fmt.Sprintf("bench-api-%d-%d", run, time.Now().UnixNano()%100000)
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	defer kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	var next atomic.Int64
	var wg sync.WaitGroup
	cpu0 := cpuByProcess()
	began := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%05d", i)},
					Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, NodeName: "bench-nowhere",
						Containers: []corev1.Container{{Name: "main", Image: "none", Command: []string{"true"}}}}}
				if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
					t.Errorf("create pod %d: %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	t.Logf("run %d: API server alone, while creating: %s", run, cpuShare(cpu0, cpuByProcess(), took))
	return took
}

// submits reads slurm-vk's count of submits slurmrestd accepted.
func submits(t *testing.T, metrics string) int {
	resp, err := http.Get(metrics)
	if err != nil {
		t.Fatalf("slurm-vk metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("slurm-vk metrics: %s", resp.Status)
	}
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "slurm_vk_slurmrestd_requests_total{") && strings.Contains(line, `op="submit"`) && strings.Contains(line, `outcome="ok"`) {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("slurm-vk metrics: %q: %v", line, err)
			}
			return int(v)
		}
	}
	return 0
}

// cpuByProcess is the CPU time used so far by each process of the chain
// (by command name, summed), and by the whole machine ("all").
func cpuByProcess() map[string]time.Duration {
	names := map[string]bool{"etcd": true, "kube-apiserver": true, "kube-scheduler": true, "kube-controller": true,
		"slurm-vk": true, "slurm-fetchd": true, "slurmrestd": true, "slurmctld": true, "slurmd": true, "e2e.test": true}
	out := map[string]time.Duration{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		data, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		lp, rp := strings.IndexByte(string(data), '('), strings.LastIndexByte(string(data), ')')
		if lp < 0 || rp < lp {
			continue
		}
		name := string(data[lp+1 : rp])
		if !names[name] {
			continue
		}
		f := strings.Fields(string(data[rp+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[name] += time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(data), "\n", 2)[0])
		busy := int64(0)
		for i, v := range f[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			if i != 3 && i != 4 { // all but idle and iowait
				busy += n
			}
		}
		out["all"] = time.Duration(busy) * time.Second / 100
	}
	return out
}

// cpuShare formats each process's share of a core over a window, largest
// first: "all 190%, kube-apiserver 70%, ...".
func cpuShare(before, after map[string]time.Duration, window time.Duration) string {
	type share struct {
		name string
		pct  float64
	}
	var shares []share
	for name, d := range after {
		shares = append(shares, share{name, 100 * (d - before[name]).Seconds() / window.Seconds()})
	}
	sort.Slice(shares, func(i, j int) bool { return shares[i].pct > shares[j].pct })
	var parts []string
	for _, s := range shares {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", s.name, s.pct))
	}
	return "%core: " + strings.Join(parts, ", ")
}
