package provider

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Metrics are the provider's Prometheus metrics.
type Metrics struct {
	provider   atomic.Pointer[Provider] // set by New; its pods are counted by phase
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	logStreams prometheus.Gauge
}

// NewMetrics registers the provider's metrics with reg. Pods by phase are
// read at each scrape from the Provider given these metrics in its Config.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slurm_vk_slurmrestd_requests_total", Help: "slurmrestd calls by operation and outcome (ok, or the error kind).",
		}, []string{"op", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "slurm_vk_slurmrestd_request_seconds", Help: "slurmrestd call latency, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}, []string{"op"}),
		logStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slurm_vk_log_streams_active", Help: "Open container log streams.",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.logStreams, &phaseCollector{m: m,
		desc: prometheus.NewDesc("slurm_vk_pods", "Pods on this node by phase.", []string{"phase"}, nil)})
	return m
}

type phaseCollector struct {
	m    *Metrics
	desc *prometheus.Desc
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodRunning: 0, corev1.PodSucceeded: 0, corev1.PodFailed: 0}
	if p := c.m.provider.Load(); p != nil {
		p.mu.Lock()
		for _, st := range p.pods {
			counts[st.pod.Status.Phase]++
		}
		p.mu.Unlock()
	}
	for phase, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(phase))
	}
}

func (m *Metrics) observe(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	outcome := "ok"
	for _, k := range []error{slurmclient.ErrNotFound, slurmclient.ErrUnauthenticated, slurmclient.ErrForbidden, slurmclient.ErrRejected, slurmclient.ErrUnavailable} {
		if err != nil && errors.Is(err, k) {
			outcome = k.Error()
		}
	}
	if err != nil && outcome == "ok" {
		outcome = "error"
	}
	m.requests.WithLabelValues(op, outcome).Inc()
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Instrument wraps a slurmclient so every call is counted and timed.
func (m *Metrics) Instrument(c slurmclient.Interface) slurmclient.Interface {
	return &instrumented{Interface: c, m: m}
}

type instrumented struct {
	slurmclient.Interface
	m *Metrics
}

func (i *instrumented) Ping(ctx context.Context) (slurmclient.ServerInfo, error) {
	t := time.Now()
	v, err := i.Interface.Ping(ctx)
	i.m.observe("ping", t, err)
	return v, err
}

func (i *instrumented) Submit(ctx context.Context, s slurmclient.JobSpec) (slurmclient.JobID, error) {
	t := time.Now()
	v, err := i.Interface.Submit(ctx, s)
	i.m.observe("submit", t, err)
	return v, err
}

func (i *instrumented) Job(ctx context.Context, id slurmclient.JobID) (*slurmclient.Job, error) {
	t := time.Now()
	v, err := i.Interface.Job(ctx, id)
	i.m.observe("job", t, err)
	return v, err
}

func (i *instrumented) JobStates(ctx context.Context, ids []slurmclient.JobID) ([]slurmclient.JobStatus, error) {
	t := time.Now()
	v, err := i.Interface.JobStates(ctx, ids)
	i.m.observe("job_states", t, err)
	return v, err
}

func (i *instrumented) Jobs(ctx context.Context, f slurmclient.JobFilter) ([]slurmclient.Job, error) {
	t := time.Now()
	v, err := i.Interface.Jobs(ctx, f)
	i.m.observe("jobs", t, err)
	return v, err
}

func (i *instrumented) Cancel(ctx context.Context, id slurmclient.JobID) error {
	t := time.Now()
	err := i.Interface.Cancel(ctx, id)
	i.m.observe("cancel", t, err)
	return err
}

func (i *instrumented) Signal(ctx context.Context, id slurmclient.JobID, sig syscall.Signal) error {
	t := time.Now()
	err := i.Interface.Signal(ctx, id, sig)
	i.m.observe("signal", t, err)
	return err
}

func (i *instrumented) Nodes(ctx context.Context) ([]slurmclient.Node, error) {
	t := time.Now()
	v, err := i.Interface.Nodes(ctx)
	i.m.observe("nodes", t, err)
	return v, err
}

func (i *instrumented) Partitions(ctx context.Context) ([]slurmclient.Partition, error) {
	t := time.Now()
	v, err := i.Interface.Partitions(ctx)
	i.m.observe("partitions", t, err)
	return v, err
}

// countedStream keeps the active-streams gauge while a log stream is open.
type countedStream struct {
	io.ReadCloser
	once sync.Once
	g    prometheus.Gauge
}

func (c *countedStream) Close() error {
	c.once.Do(c.g.Dec)
	return c.ReadCloser.Close()
}
