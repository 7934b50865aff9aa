// Package server is the fetch endpoint: an HTTP server that runs on the
// Slurm side, next to the shared file system, and serves job output by byte
// offset (with long-poll), stages input files into pod directories, and
// removes pod directories when their pods are gone. The protocol is in
// fetch/README.md.
//
// Every path is confined twice: names are validated against the layout
// contract, and all file access goes through an os.Root opened on the pod
// directory, so neither "..", nor an absolute path, nor a symlink can reach
// outside it.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/internal/tokenfile"
	"github.com/slurmkube/slurm-vk/tunnel/hub"
)

// Config configures a Server.
type Config struct {
	// Root is the shared directory holding pod directories.
	Root string
	// TokenFile holds a bearer token that reaches every pod; re-read on
	// change. Optional when Clients are given.
	TokenFile string
	// Clients are callers with tokens of their own, each reaching only the
	// pods of its users: one per virtual node, or per set of nodes that
	// serve the same tenants.
	Clients []Client
	// PollInterval is how often a long-poll re-checks a file when no
	// file-system event arrives: the latency floor on file systems where
	// inotify cannot see writes from other hosts (NFS, Lustre). Default 1s.
	PollInterval time.Duration
	// MaxWait caps a long-poll's wait parameter. Default 60s.
	MaxWait time.Duration
	// MaxLongPolls caps the log reads waiting at once (default 4096), and
	// MaxLongPollsPerPod those of one pod (default 32): a read that would
	// wait beyond them is answered at once, 503 or 429 with Retry-After, so
	// no pod can hold every descriptor and thread of the server.
	MaxLongPolls, MaxLongPollsPerPod int
	// MaxChunk caps the bytes one log read returns. Default 4 MiB.
	MaxChunk int64
	// MaxUpload caps one staged file. Default 16 MiB.
	MaxUpload int64
	// Retention is how long a deleted pod's directory is kept. 0: removed
	// at once.
	Retention time.Duration
	// Owner, when set, owns what the server creates for a pod whose
	// create request names no user (single-user tenancy, a server running
	// as root on behalf of the one job user).
	Owner *Owner
	// Users are the users pods may be created for (create request's
	// ?user=), by name: each pod directory is theirs alone (0700). A user
	// not listed is refused, so a client cannot make files owned by root or
	// by a system account.
	Users map[string]Owner
	// MaxAgents caps the tunnel agents connected at once (default 10000):
	// one per running pod with exec enabled.
	MaxAgents int
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; nil: a private registry.
	Registerer prometheus.Registerer
	// Gatherer serves /metrics; nil: the private registry.
	Gatherer prometheus.Gatherer
}

// Owner is a numeric uid and gid.
type Owner struct{ UID, GID int }

// Client is a caller that may reach the pods of Users only (names from
// Config.Users): create them for those users, and read, stage into and
// delete only directories those users own.
type Client struct {
	Name      string
	TokenFile string
	Users     []string
}

// Server serves the fetch protocol.
type Server struct {
	cfg     Config
	root    *os.Root
	callers []*caller
	log     *slog.Logger
	watch   *watcher
	m       metrics
	polls   polls
	mux     *http.ServeMux
	hub     *hub.Hub
}

type metrics struct {
	requests  *prometheus.CounterVec
	bytes     prometheus.Counter
	longPolls prometheus.Gauge
	staged    prometheus.Counter
}

// New opens the root and checks the token file.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	callers, err := callersOf(cfg)
	if err != nil {
		return nil, err
	}
	root, err := openRoot(cfg.Root)
	if err != nil {
		return nil, err
	}
	w, err := newWatcher(cfg.Logger)
	if err != nil {
		root.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, root: root, callers: callers, log: cfg.Logger, watch: w, polls: polls{perPod: map[string]int{}, perClient: map[*caller]int{}, perUser: map[int]int{}},
		hub: hub.New(cfg.MaxAgents, cfg.Logger)}
	reg, gather := cfg.Registerer, cfg.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gather = r, r
	}
	s.m = newMetrics(reg)
	s.mux = s.routes(gather)
	return s, nil
}

func (cfg Config) withDefaults() Config {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 60 * time.Second
	}
	if cfg.MaxLongPolls <= 0 {
		cfg.MaxLongPolls = 4096
	}
	if cfg.MaxLongPollsPerPod <= 0 {
		cfg.MaxLongPollsPerPod = 32
	}
	if cfg.MaxChunk <= 0 {
		cfg.MaxChunk = 4 << 20
	}
	if cfg.MaxUpload <= 0 {
		cfg.MaxUpload = 16 << 20
	}
	if cfg.MaxAgents <= 0 {
		cfg.MaxAgents = 10000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg
}

// openRoot opens the directory that holds the pod directories, which
// only the server may write.
func openRoot(dir string) (*os.Root, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open root: %w", err)
	}
	if fi, err := root.Stat("."); err == nil && fi.Mode().Perm()&0o022 != 0 {
		// Write access to the root lets a job rename or remove other pods'
		// directories, or put a link where one will be made.
		root.Close()
		return nil, fmt.Errorf("root %s is writable by group or others (%04o): any job user could rename or replace other pods' directories; make it 0711 and the server's own", dir, fi.Mode().Perm())
	}
	return root, nil
}

// callersOf is who may call: the default token (every pod) and the
// clients (their users' pods), each token file read once now.
func callersOf(cfg Config) ([]*caller, error) {
	var callers []*caller
	if cfg.TokenFile != "" {
		callers = append(callers, &caller{name: "default", token: tokenfile.New(cfg.TokenFile), all: true})
	}
	for _, c := range cfg.Clients {
		cl := &caller{name: c.Name, token: tokenfile.New(c.TokenFile), users: map[string]bool{}, uids: map[int]bool{}}
		for _, u := range c.Users {
			o, ok := cfg.Users[u]
			if !ok {
				return nil, fmt.Errorf("client %s: user %q is not one of the users pods may be created for", c.Name, u)
			}
			cl.users[u], cl.uids[o.UID] = true, true
		}
		callers = append(callers, cl)
	}
	if len(callers) == 0 {
		return nil, errors.New("no token file: give a token file or clients")
	}
	for _, c := range callers {
		if _, err := c.token.Get(true); err != nil {
			return nil, fmt.Errorf("client %s: %w", c.name, err)
		}
	}
	return callers, nil
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "slurm_fetchd_requests_total", Help: "Requests by handler and HTTP status code.",
		}, []string{"handler", "code"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slurm_fetchd_log_bytes_served_total", Help: "Job output bytes served.",
		}),
		longPolls: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "slurm_fetchd_active_long_polls", Help: "Log reads waiting for new output.",
		}),
		staged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "slurm_fetchd_staged_bytes_total", Help: "Bytes written to staged files.",
		}),
	}
	reg.MustRegister(m.requests, m.bytes, m.longPolls, m.staged)
	return m
}

// routes is the protocol of fetch/README.md.
func (s *Server) routes(gather prometheus.Gatherer) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	const pod = "/v1/pods/{namespace}/{name}/{uid}"
	s.handle(mux, "PUT "+pod, "pod_create", s.createPod)
	s.handle(mux, "DELETE "+pod, "pod_delete", s.deletePod)
	s.handle(mux, "PUT "+pod+"/files/{path...}", "stage", s.stage)
	s.handle(mux, "DELETE "+pod+"/files/{path...}", "unstage_file", s.unstageFile)
	s.handle(mux, "DELETE "+pod+"/files", "unstage", s.unstage)
	s.handle(mux, "GET "+pod+"/containers/{container}/log", "log", s.readLog)
	s.handle(mux, "GET "+pod+"/containers/{container}/info", "info", s.info)
	s.handle(mux, "GET "+pod+"/containers", "containers", s.containers)
	s.handle(mux, "GET "+pod+"/tunnel", "tunnel", s.tunnelSession)
	mux.HandleFunc("GET /v1/agent/{namespace}/{name}/{uid}", s.tunnelAgent)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}

// Close releases the root and the file-system watcher.
func (s *Server) Close() error {
	s.hub.Close()
	s.watch.close()
	return s.root.Close()
}

// ServeHTTP implements http.Handler. Non-canonical paths ("..", ".", "//")
// are refused rather than redirected to their cleaned form, as
// http.ServeMux would: no client of ours sends them.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
		writeError(w, http.StatusBadRequest, "the path must be canonical: no '.', '..' or empty segments")
		return
	}
	s.mux.ServeHTTP(w, r)
}

// statusWriter remembers the status code for metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// handle registers an authenticated handler for a pod and counts it.
func (s *Server) handle(mux *http.ServeMux, pattern, name string, h func(http.ResponseWriter, *http.Request, layout.Pod)) {
	mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() { s.m.requests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc() }()
		c := s.caller(r)
		if c == nil {
			sw.Header().Set("WWW-Authenticate", `Bearer realm="slurm-fetchd"`)
			writeError(sw, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		pod := layout.Pod{Namespace: r.PathValue("namespace"), Name: r.PathValue("name"), UID: r.PathValue("uid")}
		if err := pod.Validate(); err != nil {
			writeError(sw, http.StatusBadRequest, err.Error())
			return
		}
		if why := s.reaches(c, r, name == "pod_create"); why != "" {
			writeError(sw, http.StatusForbidden, why)
			return
		}
		h(sw, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)), pod)
	})
}
