package provider

import (
	"errors"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// Metrics are the provider's Prometheus metrics: slurmrestd calls (fed by
// ObserveSlurm, slurmclient.Config's Observe hook), log streams, and pods
// by phase (a collector each Provider registers when it is made).
type Metrics struct {
	reg        prometheus.Registerer
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	logStreams prometheus.Gauge
}

// NewMetrics registers the provider's metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reg: reg,
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
	reg.MustRegister(m.requests, m.latency, m.logStreams)
	return m
}

// ObserveSlurm counts and times one slurmrestd call; it is
// slurmclient.Config.Observe.
func (m *Metrics) ObserveSlurm(op string, elapsed time.Duration, err error) {
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
	m.latency.WithLabelValues(op).Observe(elapsed.Seconds())
}

// phaseCollector counts a provider's pods by phase at each scrape.
type phaseCollector struct {
	p    *Provider
	desc *prometheus.Desc
}

func newPhaseCollector(p *Provider) *phaseCollector {
	return &phaseCollector{p: p, desc: prometheus.NewDesc("slurm_vk_pods", "Pods on this node by phase.", []string{"phase"}, nil)}
}

func (c *phaseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *phaseCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodRunning: 0, corev1.PodSucceeded: 0, corev1.PodFailed: 0}
	c.p.mu.Lock()
	for _, st := range c.p.pods {
		counts[st.pod.Status.Phase]++
	}
	c.p.mu.Unlock()
	for phase, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(phase))
	}
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
