// Command slurm-vk is the Slurm virtual kubelet: one process serves one
// virtual node backed by one Slurm partition, running its pods as Slurm
// batch jobs through slurmrestd, and serving their logs from the fetch
// endpoint (slurm-fetchd).
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sirupsen/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/log"
	logruslogger "github.com/virtual-kubelet/virtual-kubelet/log/logrus"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/yaml"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/provider"
	"github.com/slurmkube/slurm-vk/slurmclient"
	tunnelclient "github.com/slurmkube/slurm-vk/tunnel/client"
)

func main() {
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "slurm-vk:", err)
		os.Exit(2)
	}
	if o.Check {
		b, err := yaml.Marshal(o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "slurm-vk:", err)
			os.Exit(1)
		}
		os.Stdout.Write(b)
		return
	}
	lg := logrus.New()
	if o.Verbose {
		lg.SetLevel(logrus.DebugLevel)
	}
	log.L = logruslogger.FromLogrus(logrus.NewEntry(lg))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = log.WithLogger(ctx, log.L.WithField("node", o.NodeName))
	if limit := setMemoryLimit(); limit > 0 {
		log.G(ctx).WithField("bytes", limit).Info("Go memory limit set from the container's memory limit")
	}
	if err := run(ctx, o); err != nil {
		log.G(ctx).WithError(err).Error("slurm-vk stopped")
		os.Exit(1)
	}
}

func run(ctx context.Context, o *options) error {
	kcfg, err := clientcmd.BuildConfigFromFlags("", o.Kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	// client-go's default (5/s) would hold a burst of pods' status updates
	// back for minutes; a kubelet's is 50/s for its 110 pods.
	kcfg.QPS, kcfg.Burst = float32(orDefault(o.KubeAPIQPS, defaultKubeAPIQPS)), orDefault(o.KubeAPIBurst, defaultKubeAPIBurst)
	kube, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return err
	}
	return serve(ctx, o, kube)
}

// serve runs the virtual node until ctx ends.
func serve(ctx context.Context, o *options, kube kubernetes.Interface) error {
	if o.Tenancy.Mode == provider.TenancyMapped {
		log.G(ctx).Info("tenancy " + o.Tenancy.Summary())
	} else {
		log.G(ctx).Warn("tenancy " + o.Tenancy.Summary() + "; map namespaces to users (tenancy.mode: mapped) to keep them apart")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := provider.NewMetrics(reg)
	slurm, tenantClient, err := slurmClients(o, metrics)
	if err != nil {
		return err
	}
	events := record.NewBroadcaster()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	defer events.Shutdown()
	recorder := events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "slurm-vk", Host: o.NodeName})
	files, err := fetchclient.New(fetchclient.Config{URL: o.FetchURL, TokenFile: o.FetchTokenFile, CAFile: o.FetchCAFile})
	if err != nil {
		return err
	}
	_, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return fmt.Errorf("listen address: %w", err)
	}
	port, _ := strconv.Atoi(portStr)
	tlsOpt, err := servingTLS(o)
	if err != nil {
		return err
	}

	var p *provider.Provider
	cfg := providerConfig(o)
	cfg.Events, cfg.Metrics, cfg.TenantClient = recorder, metrics, tenantClient
	mux := http.NewServeMux()
	n, err := nodeutil.NewNode(o.NodeName, func(pc nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
		look := provider.Lookups{
			ConfigMap: func(ns, name string) (*corev1.ConfigMap, error) { return pc.ConfigMaps.ConfigMaps(ns).Get(name) },
			Secret:    func(ns, name string) (*corev1.Secret, error) { return pc.Secrets.Secrets(ns).Get(name) },
			Pod:       func(ns, name string) (*corev1.Pod, error) { return pc.Pods.Pods(ns).Get(name) },
			Services:  func(ns string) ([]*corev1.Service, error) { return pc.Services.Services(ns).List(labels.Everything()) },
		}
		np := provider.NewNodeProvider(provider.NodeConfig{Name: o.NodeName, Partition: o.Partition, MaxPods: o.MaxPods, Runtime: o.Runtime,
			InternalIP: o.NodeIP, KubeletPort: int32(port), Interval: o.NodeInterval.Duration, Labels: o.labels, Taints: o.taints, QueueFactor: o.QueueFactor, NoProviderTaint: o.NoProviderTaint}, slurm, pc.Node)
		// The node as an earlier run left it: a restart keeps its
		// conditions' transition times (Ready throughout).
		if prev, err := kube.CoreV1().Nodes().Get(ctx, o.NodeName, metav1.GetOptions{}); err == nil {
			np.Carry(prev)
		}
		np.Prime(ctx, pc.Node)
		cfg.NodeSizes, cfg.NodeAddress, cfg.Allocatable = np.NodeSizes, np.NodeAddress, np.Allocatable
		p = provider.New(cfg, slurm, files, look)
		return p, np, nil
	},
		nodeutil.WithClient(kube),
		nodeutil.AttachProviderRoutes(mux),
		tlsOpt,
		kubeletAPI(o, kube, recorder, mux),
	)
	if err != nil {
		return err
	}
	// Before the pod controller runs: re-attach this node's jobs to their
	// pods and cancel the jobs of pods that are gone.
	if err := p.RecoverNode(ctx, kube); err != nil {
		return err
	}
	if o.MetricsListen != "" {
		stop := serveMetrics(ctx, o.MetricsListen, reg)
		defer stop()
	}
	log.G(ctx).WithField("partition", o.Partition).WithField("listen", o.Listen).Info("starting the virtual node")
	if o.ClientCA == "" {
		log.G(ctx).WithField("listen", o.Listen).Warn("the kubelet API is not authenticated (-insecure-kubelet-api): anyone who reaches it reads container logs and pod specs")
	}
	return n.Run(ctx)
}

// slurmClients makes the node's slurmrestd client and the maker of a
// tenant's. A tenant acts through its own token, or the node's token with
// X-SLURM-USER-NAME (which slurmrestd grants SlurmUser and root only).
func slurmClients(o *options, metrics *provider.Metrics) (slurmclient.Interface, func(provider.Tenant) (slurmclient.Interface, error), error) {
	cfg := slurmclient.Config{URL: o.SlurmrestdURL, User: o.SlurmUser, TokenFile: o.SlurmTokenFile,
		APIVersion: o.SlurmAPIVersion, CAFile: o.SlurmCAFile, Observe: metrics.ObserveSlurm}
	node, err := slurmclient.New(cfg)
	if err != nil {
		return nil, nil, err
	}
	tenant := func(t provider.Tenant) (slurmclient.Interface, error) {
		cfg := cfg
		cfg.User = t.User
		if t.TokenFile != "" {
			cfg.TokenFile, cfg.User = t.TokenFile, ""
		}
		c, err := slurmclient.New(cfg)
		if err != nil {
			return nil, fmt.Errorf("slurmrestd client for user %s: %w", t.User, err)
		}
		return c, nil
	}
	return node, tenant, nil
}

func orDefaultString(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// providerConfig is the provider's part of the options.
func providerConfig(o *options) provider.Config {
	return provider.Config{
		TranslateConfig: provider.TranslateConfig{NodeName: o.NodeName, Partition: o.Partition, SharedRoot: o.SharedRoot,
			Runtime: o.Runtime, HostPathPrefixes: splitList(o.HostPathPrefixes), AllowedOptions: splitList(o.AllowedOptions),
			Allowed: provider.Allowed{Runtimes: splitList(o.AllowedRuntimes), Partitions: splitList(o.AllowedPartitions),
				Accounts: splitList(o.AllowedAccounts), QOS: splitList(o.AllowedQOS),
				Reservations: splitList(o.AllowedReservations), Constraints: splitList(o.AllowedConstraints)},
			RestartBackoff: o.RestartBackoff.Duration, MaxRestartBackoff: o.MaxRestartBackoff.Duration, LogTimeHelper: o.LogTimeHelper,
			Agent: o.Agent, AgentURL: orDefaultString(o.AgentURL, o.FetchURL), AgentCAFile: o.AgentCAFile},
		StatusInterval: o.StatusInterval.Duration, Tenancy: o.Tenancy,
		Tunnel: tunnelclient.New(tunnelclient.Config{URL: o.FetchURL, TokenFile: o.FetchTokenFile, CAFile: o.FetchCAFile}),
	}
}

// kubeletAPI sets up the kubelet API's listener and handler: the
// provider's routes, with webhook authentication when a client CA is set.
func kubeletAPI(o *options, kube kubernetes.Interface, recorder record.EventRecorder, mux *http.ServeMux) nodeutil.NodeOpt {
	return func(cfg *nodeutil.NodeConfig) error {
		cfg.NumWorkers = orDefault(o.PodSyncWorkers, defaultPodSyncWorkers)
		// virtual-kubelet's queues default to client-go's controller rate
		// limit, 10 items/s after a burst of 100: a workflow's thousand
		// pods would wait in it for a minute and a half. The API client's
		// QPS is the limit that matters; failures still back off per pod.
		cfg.PodControllerConfigOpts = append(cfg.PodControllerConfigOpts, func(pc *node.PodControllerConfig) error {
			limiter := func() workqueue.TypedRateLimiter[any] {
				return workqueue.NewTypedMaxOfRateLimiter(
					workqueue.NewTypedItemExponentialFailureRateLimiter[any](5*time.Millisecond, 1000*time.Second),
					&workqueue.TypedBucketRateLimiter[any]{Limiter: rate.NewLimiter(rate.Limit(orDefault(o.KubeAPIQPS, defaultKubeAPIQPS)*4),
						orDefault(o.KubeAPIBurst, defaultKubeAPIBurst)*10)})
			}
			// The provider resolves env itself (Secrets stay files the job
			// reads, fieldRefs a kubelet serves, service variables):
			// virtual-kubelet's resolution would hand it Secrets as
			// literal values and fails status.hostIP.
			pc.SkipDownwardAPIResolution = true
			pc.SyncPodsFromKubernetesRateLimiter = limiter()
			pc.DeletePodsFromKubernetesRateLimiter = limiter()
			pc.SyncPodStatusFromProviderRateLimiter = limiter()
			return nil
		})
		cfg.EventRecorder = recorder
		cfg.HTTPListenAddr = o.Listen
		cfg.Handler = tailZero(mux)
		if o.ClientCA == "" {
			return nil
		}
		// Without a client-CA provider the webhook authenticator accepts
		// bearer tokens only; the API server calls kubelets with a client
		// certificate.
		auth, err := nodeutil.WebhookAuth(kube, o.NodeName, func(c *nodeutil.WebhookAuthConfig) error {
			ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca", o.ClientCA)
			if err != nil {
				return err
			}
			c.AuthnConfig.ClientCertificateCAContentProvider = ca
			return nil
		})
		if err != nil {
			return err
		}
		cfg.Handler = nodeutil.WithAuth(writeVerbForStreams{auth}, tailZero(mux))
		return nil
	}
}

// serveMetrics serves /metrics and /healthz on addr until stop, which
// shuts the server down gracefully and waits for it.
func serveMetrics(ctx context.Context, addr string, reg *prometheus.Registry) (stop func()) {
	mm := http.NewServeMux()
	mm.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	// Liveness only: the process serves. Readiness of the node (is
	// slurmrestd answering?) is the node's Ready condition, not the pod's.
	mm.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	ms := &http.Server{Addr: addr, Handler: mm, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ms.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			log.G(ctx).WithError(err).Error("metrics server")
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		ms.Shutdown(sctx)
		<-done
	}
}

// servingTLS configures the kubelet API's certificate: the given pair, or
// a self-signed one; and the client CA when webhook auth is on.
func servingTLS(o *options) (nodeutil.NodeOpt, error) {
	opts, err := tlsOptions(o)
	if err != nil {
		return nil, err
	}
	return nodeutil.WithTLSConfig(opts...), nil
}

// tlsOptions are servingTLS's changes to the server's tls.Config.
func tlsOptions(o *options) ([]func(*tls.Config) error, error) {
	var opts []func(*tls.Config) error
	if o.TLSCert != "" {
		opts = append(opts, nodeutil.WithKeyPairFromPath(o.TLSCert, o.TLSKey))
	} else {
		cert, err := selfSigned(o.NodeName, o.NodeIP)
		if err != nil {
			return nil, err
		}
		opts = append(opts, func(c *tls.Config) error { c.Certificates = []tls.Certificate{cert}; return nil })
	}
	if o.ClientCA != "" {
		// virtual-kubelet's WithCAFromPath requires a client certificate,
		// which shuts out bearer tokens (metrics scrapers, a service
		// account with nodes/proxy) before the webhook authenticator sees
		// them. A kubelet verifies a certificate if one is given and lets
		// the authenticator decide otherwise; so does this.
		opts = append(opts, nodeutil.WithCAFromPath(o.ClientCA), func(c *tls.Config) error {
			c.ClientAuth = tls.VerifyClientCertIfGiven
			return nil
		})
	}
	return opts, nil
}

// tailZero tells the provider a logs request asked for tailLines=0 (no
// lines), which virtual-kubelet's options cannot tell from no tail.
func tailZero(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/containerLogs/") {
			if n, err := strconv.Atoi(r.URL.Query().Get("tailLines")); err == nil && n == 0 {
				r = r.WithContext(provider.WithTailZero(r.Context()))
			}
		}
		h.ServeHTTP(w, r)
	})
}
