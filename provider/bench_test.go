package provider

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
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

// BenchmarkLabSync: the status cycle of a provider tracking SYNC_JOBS
// (default "2000,20000") jobs, all held in Slurm so they stay, each size
// in the same run so the larger is read against the smaller. The pods are
// as the API server hands them (managed fields, owner, projected token).
// Reported per size: the first cycle after a restart (every job unknown)
// and a steady cycle (median): time, CPU, slurmrestd HTTP requests; and
// the Go heap the tracked pods hold, the process's RSS.
func BenchmarkLabSync(b *testing.B) {
	lab := labenv.Require(b)
	sizes := []int{2000, 20000}
	if v := os.Getenv("SYNC_JOBS"); v != "" {
		sizes = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				b.Fatalf("SYNC_JOBS=%q: want sizes like 2000,20000", v)
			}
			sizes = append(sizes, n)
		}
	}
	var requests atomic.Int64
	sc, err := slurmclient.New(slurmclient.Config{URL: lab.URL, User: lab.User, TokenFile: lab.TokenFile,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return roundTripFunc(func(r *http.Request) (*http.Response, error) { requests.Add(1); return rt.RoundTrip(r) })
		}})
	if err != nil {
		b.Fatal(err)
	}
	ids := submitHeld(b, sc, lab.Partition, slices.Max(sizes))
	for _, n := range sizes {
		b.Run(fmt.Sprintf("jobs=%d", n), func(b *testing.B) {
			ctx := context.Background()
			// The baseline, in the same run: the first cycle reading one
			// job at a time, as before the cycle read them in parallel.
			serial := New(Config{TranslateConfig: TranslateConfig{NodeName: "bench", SharedRoot: "/tmp"}}, sc, nil, lookups)
			for i, id := range ids[:n] {
				serial.reattach(apiPod(i), id)
			}
			refreshWorkers = 1
			t0 := time.Now()
			err := serial.Sync(ctx)
			refreshWorkers = 8
			if err != nil {
				b.Fatal(err)
			}
			serialFirst := time.Since(t0)
			runtime.GC()
			var ms0 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			// What the process holds beside the provider, per pod: the
			// informer's pod as the API server sent it, and
			// virtual-kubelet's copy of the last status the provider gave.
			informer := make([]*corev1.Pod, n)
			var mu sync.Mutex
			lastStatus := map[types.UID]*corev1.Pod{}
			p := New(Config{TranslateConfig: TranslateConfig{NodeName: "bench", SharedRoot: "/tmp"}}, sc, nil, lookups)
			p.notify = func(pod *corev1.Pod) { mu.Lock(); lastStatus[pod.UID] = pod; mu.Unlock() }
			for i, id := range ids[:n] {
				informer[i] = apiPod(i)
				p.reattach(informer[i], id)
			}
			// The first cycle after a restart: every job's state is unknown.
			r0, c0, t0 := requests.Load(), selfCPU(), time.Now()
			if err := p.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			first, firstCPU, firstReqs := time.Since(t0), selfCPU()-c0, requests.Load()-r0
			var cycles, cpus []time.Duration
			maxReqs := int64(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r0, c0, t0 := requests.Load(), selfCPU(), time.Now()
				if err := p.Sync(ctx); err != nil {
					b.Fatal(err)
				}
				cycles, cpus = append(cycles, time.Since(t0)), append(cpus, selfCPU()-c0)
				maxReqs = max(maxReqs, requests.Load()-r0)
			}
			b.StopTimer()
			runtime.GC()
			var all, ms runtime.MemStats
			runtime.ReadMemStats(&all)
			rss := selfRSS()
			if len(lastStatus) != n {
				b.Errorf("%d of %d pods' statuses were published", len(lastStatus), n)
			}
			informer, lastStatus = nil, nil
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if f := os.Getenv("SYNC_HEAPPROFILE"); f != "" {
				out, err := os.Create(f)
				if err == nil {
					pprof.WriteHeapProfile(out)
					out.Close()
				}
			}
			runtime.KeepAlive(p)
			// States in chunks of 2,000 IDs, plus the few pending reasons a
			// cycle re-reads (PendingRefreshPerCycle).
			if want := int64((n+1999)/2000 + 20); maxReqs > want {
				b.Errorf("a steady cycle made %d requests, want at most %d", maxReqs, want)
			}
			b.ReportMetric(first.Seconds(), "first-cycle-s")
			b.ReportMetric(serialFirst.Seconds(), "serial-first-cycle-s")
			b.ReportMetric(float64(firstCPU.Milliseconds()), "first-cycle-cpu-ms")
			b.ReportMetric(float64(firstReqs), "first-cycle-requests")
			b.ReportMetric(float64(median(cycles).Milliseconds()), "cycle-ms")
			b.ReportMetric(float64(median(cpus).Milliseconds()), "cycle-cpu-ms")
			b.ReportMetric(float64(maxReqs), "max-requests/cycle")
			b.ReportMetric(float64(int64(ms.HeapAlloc)-int64(ms0.HeapAlloc))/float64(n)/1024, "provider-heap-KiB/pod")
			b.ReportMetric(float64(int64(all.HeapAlloc)-int64(ms0.HeapAlloc))/float64(n)/1024, "process-heap-KiB/pod")
			b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// submitHeld submits n jobs that Slurm holds, 8 at a time, and cancels
// them when b ends.
func submitHeld(b *testing.B, sc slurmclient.Interface, partition string, n int) []slurmclient.JobID {
	ctx := context.Background()
	ids := make([]slurmclient.JobID, n)
	b.Cleanup(func() {
		sem := make(chan struct{}, 8)
		var wg sync.WaitGroup
		for _, id := range ids {
			if id != 0 {
				wg.Add(1)
				sem <- struct{}{}
				go func() { defer func() { <-sem; wg.Done() }(); sc.Cancel(ctx, id) }()
			}
		}
		wg.Wait()
	})
	var failed atomic.Pointer[error]
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id, err := sc.Submit(ctx, slurmclient.JobSpec{Script: "#!/bin/sh\ntrue\n", Name: "sync-bench", WorkDir: "/tmp",
				Env: []string{"PATH=/bin"}, Stdout: "/dev/null", Partition: partition, Hold: true})
			if err != nil {
				failed.CompareAndSwap(nil, &err)
			}
			ids[i] = id
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("submit: %v", *err)
	}
	return ids
}

// apiPod is pod i as the API server hands it to a kubelet: a Job's pod,
// scheduled, with managed fields, a projected token and a Running status.
func apiPod(i int) *corev1.Pod {
	name := fmt.Sprintf("work-%d-x7k2p", i)
	t := metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	fields := func(raw string) *metav1.FieldsV1 { return &metav1.FieldsV1{Raw: []byte(raw)} }
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "bench", Name: name, UID: types.UID(fmt.Sprintf("6f1c2a9e-0000-4000-8000-%012d", i)),
			ResourceVersion: strconv.Itoa(100000 + i), CreationTimestamp: t, GenerateName: "work-",
			Labels: map[string]string{"batch.kubernetes.io/controller-uid": "0b6c0d7e-4c38-4bde-9a43-6a2f1b3c9d10",
				"batch.kubernetes.io/job-name": "work", "job-name": "work", "controller-uid": "0b6c0d7e-4c38-4bde-9a43-6a2f1b3c9d10",
				"batch.kubernetes.io/job-completion-index": strconv.Itoa(i)},
			Annotations: map[string]string{"batch.kubernetes.io/job-completion-index": strconv.Itoa(i), "slurm-vk.io/time-limit": "1h"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "work",
				UID: "0b6c0d7e-4c38-4bde-9a43-6a2f1b3c9d10", Controller: ptr(true), BlockOwnerDeletion: ptr(true)}},
			Finalizers: []string{"batch.kubernetes.io/job-tracking"},
			ManagedFields: []metav1.ManagedFieldsEntry{
				{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &t, FieldsType: "FieldsV1",
					FieldsV1: fields(`{"f:metadata":{"f:annotations":{".":{},"f:batch.kubernetes.io/job-completion-index":{},"f:slurm-vk.io/time-limit":{}},"f:finalizers":{".":{},"v:\"batch.kubernetes.io/job-tracking\"":{}},"f:generateName":{},"f:labels":{".":{},"f:batch.kubernetes.io/controller-uid":{},"f:batch.kubernetes.io/job-completion-index":{},"f:batch.kubernetes.io/job-name":{},"f:controller-uid":{},"f:job-name":{}},"f:ownerReferences":{".":{},"k:{\"uid\":\"0b6c0d7e-4c38-4bde-9a43-6a2f1b3c9d10\"}":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"main\"}":{".":{},"f:command":{},"f:image":{},"f:imagePullPolicy":{},"f:name":{},"f:resources":{".":{},"f:requests":{".":{},"f:cpu":{},"f:memory":{}}},"f:terminationMessagePath":{},"f:terminationMessagePolicy":{}}},"f:dnsPolicy":{},"f:enableServiceLinks":{},"f:nodeSelector":{},"f:restartPolicy":{},"f:schedulerName":{},"f:securityContext":{},"f:terminationGracePeriodSeconds":{},"f:tolerations":{}}}`)},
				{Manager: "slurm-vk", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", Time: &t, FieldsType: "FieldsV1", Subresource: "status",
					FieldsV1: fields(`{"f:status":{"f:conditions":{"k:{\"type\":\"ContainersReady\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Initialized\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"PodScheduled\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}},"k:{\"type\":\"Ready\"}":{".":{},"f:lastProbeTime":{},"f:lastTransitionTime":{},"f:status":{},"f:type":{}}},"f:containerStatuses":{},"f:hostIP":{},"f:phase":{},"f:podIP":{},"f:startTime":{}}}`)},
			},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, NodeName: "bench", SchedulerName: "default-scheduler",
			ServiceAccountName: "default", TerminationGracePeriodSeconds: ptr(int64(30)), DNSPolicy: corev1.DNSClusterFirst,
			NodeSelector: map[string]string{"type": "virtual-kubelet"},
			Containers: []corev1.Container{{Name: "main", Image: "registry.example.org/science/solver:2.4.1",
				Command: []string{"solver", "--input", fmt.Sprintf("/data/in/%d.h5", i)}, ImagePullPolicy: corev1.PullIfNotPresent,
				Resources:              corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), corev1.ResourceMemory: resource.MustParse("1Gi")}},
				VolumeMounts:           []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
				TerminationMessagePath: "/dev/termination-log", TerminationMessagePolicy: corev1.TerminationMessageReadFile}},
			Volumes: []corev1.Volume{{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
					{DownwardAPI: &corev1.DownwardAPIProjection{Items: []corev1.DownwardAPIVolumeFile{{Path: "namespace", FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.namespace"}}}}},
				}, DefaultMode: ptr(int32(420))}}}},
			Tolerations: []corev1.Toleration{
				{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr(int64(300))},
			},
		},
		Status: corev1.PodStatus{Phase: corev1.PodPending, StartTime: &t, HostIP: "127.0.0.1",
			Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: t},
				{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: t},
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: t, Reason: "ContainersNotReady"},
				{Type: corev1.ContainersReady, Status: corev1.ConditionFalse, LastTransitionTime: t, Reason: "ContainersNotReady"}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "main", Image: "registry.example.org/science/solver:2.4.1",
				State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "Priority", Message: "Slurm job pending: Priority"}}}}},
	}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

func ptr[T any](v T) *T { return &v }
