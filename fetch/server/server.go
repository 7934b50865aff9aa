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
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/logtime"
	"github.com/slurmkube/slurm-vk/internal/tokenfile"
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

// caller is an authenticated client; all reaches every pod.
type caller struct {
	name  string
	token *tokenfile.File
	all   bool
	users map[string]bool
	uids  map[int]bool
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
}

type metrics struct {
	requests  *prometheus.CounterVec
	bytes     prometheus.Counter
	longPolls prometheus.Gauge
	staged    prometheus.Counter
}

// New opens the root and checks the token file.
func New(cfg Config) (*Server, error) {
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	root, err := os.OpenRoot(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("open root: %w", err)
	}
	if fi, err := root.Stat("."); err == nil && fi.Mode().Perm()&0o022 != 0 {
		// Write access to the root lets a job rename or remove other pods'
		// directories, or put a link where one will be made.
		root.Close()
		return nil, fmt.Errorf("root %s is writable by group or others (%04o): any job user could rename or replace other pods' directories; make it 0711 and the server's own", cfg.Root, fi.Mode().Perm())
	}
	var callers []*caller
	if cfg.TokenFile != "" {
		callers = append(callers, &caller{name: "default", token: tokenfile.New(cfg.TokenFile), all: true})
	}
	for _, c := range cfg.Clients {
		cl := &caller{name: c.Name, token: tokenfile.New(c.TokenFile), users: map[string]bool{}, uids: map[int]bool{}}
		for _, u := range c.Users {
			o, ok := cfg.Users[u]
			if !ok {
				root.Close()
				return nil, fmt.Errorf("client %s: user %q is not one of the users pods may be created for", c.Name, u)
			}
			cl.users[u], cl.uids[o.UID] = true, true
		}
		callers = append(callers, cl)
	}
	if len(callers) == 0 {
		root.Close()
		return nil, errors.New("no token file: give a token file or clients")
	}
	for _, c := range callers {
		if _, err := c.token.Get(true); err != nil {
			root.Close()
			return nil, fmt.Errorf("client %s: %w", c.name, err)
		}
	}
	w, err := newWatcher(cfg.Logger)
	if err != nil {
		root.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, root: root, callers: callers, log: cfg.Logger, watch: w, polls: polls{perPod: map[string]int{}, perClient: map[*caller]int{}}}
	reg := cfg.Registerer
	gather := cfg.Gatherer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, gather = r, r
	}
	s.m = metrics{
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
	reg.MustRegister(s.m.requests, s.m.bytes, s.m.longPolls, s.m.staged)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	const pod = "/v1/pods/{namespace}/{name}/{uid}"
	s.handle(mux, "PUT "+pod, "pod_create", s.createPod)
	s.handle(mux, "DELETE "+pod, "pod_delete", s.deletePod)
	s.handle(mux, "PUT "+pod+"/files/{path...}", "stage", s.stage)
	s.handle(mux, "DELETE "+pod+"/files", "unstage", s.unstage)
	s.handle(mux, "GET "+pod+"/containers/{container}/log", "log", s.readLog)
	s.handle(mux, "GET "+pod+"/containers/{container}/info", "info", s.info)
	s.handle(mux, "GET "+pod+"/containers", "containers", s.containers)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	s.mux = mux
	return s, nil
}

// Close releases the root and the file-system watcher.
func (s *Server) Close() error {
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

// caller is who sent the request's bearer token; nil: nobody known.
func (s *Server) caller(r *http.Request) *caller {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return nil
	}
	var found *caller
	for _, c := range s.callers { // every one compared: the time says nothing
		want, err := c.token.Get(false)
		if err != nil {
			s.log.Error("cannot read a client's token file; refusing it", "client", c.name, "err", err)
			continue
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 && found == nil {
			found = c
		}
	}
	return found
}

// reaches says why c may not make the request, or "" if it may: a create
// must name one of c's users. Every other request is checked on the pod
// directory it opens (openPod), so nothing can change between the check
// and the use.
func (s *Server) reaches(c *caller, r *http.Request, create bool) string {
	if u := r.URL.Query().Get("user"); create && !c.all && !c.users[u] {
		return fmt.Sprintf("client %s may not create pod directories for user %q", c.name, u)
	}
	return ""
}

type callerKey struct{}

// errNotYours refuses a pod directory of users the caller may not reach.
var errNotYours = errors.New("the pod belongs to users this client may not reach")

// errorBody is every 4xx/5xx answer's body.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, reason string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: reason})
}

// fsError maps a file-system error to an HTTP answer without leaking host
// paths.
func (s *Server) fsError(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		writeError(w, http.StatusNotFound, what+" does not exist")
	case errors.Is(err, errOtherOwner):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, errNotYours):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		s.log.Error("the shared file system is full", "what", what, "err", err)
		writeError(w, http.StatusInsufficientStorage, what+": no space left on the shared file system (or the quota is used up)")
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		// Out of descriptors for now: the client backs off and retries.
		s.log.Warn("out of file descriptors", "what", what, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, what+": the server is busy; retry later")
	case errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.ENOTDIR), isEscape(err):
		writeError(w, http.StatusForbidden, what+" is not a plain file inside the pod directory")
	case errors.Is(err, fs.ErrPermission):
		// The job took its own files away from the endpoint (chmod 000):
		// its answer, not a server fault.
		writeError(w, http.StatusForbidden, what+": permission denied")
	default:
		s.log.Error("file system error", "what", what, "err", err)
		writeError(w, http.StatusInternalServerError, what+": file system error")
	}
}

// isEscape recognizes os.Root's refusal to leave the root.
func isEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

// openPod opens the pod directory as its own root, for the request's
// caller: a client limited to some users gets errNotYours for a directory
// none of them owns, as the opened directory itself says.
func (s *Server) openPod(r *http.Request, pod layout.Pod) (*os.Root, error) {
	pr, err := s.root.OpenRoot(pod.Dir())
	if err != nil {
		return nil, err
	}
	if c, _ := r.Context().Value(callerKey{}).(*caller); c != nil && !c.all {
		if o, err := podOwner(pr); err != nil || o == nil || !c.uids[o.UID] {
			pr.Close()
			return nil, errors.Join(err, errNotYours)
		}
	}
	return pr, nil
}

func chown(r *os.Root, name string, o *Owner) error {
	if o == nil {
		return nil
	}
	return r.Lchown(name, o.UID, o.GID)
}

// podOwner is who owns an existing pod directory, as the file system
// says: what the server stages for the pod becomes theirs.
func podOwner(pr *os.Root) (*Owner, error) {
	fi, err := pr.Lstat(".")
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil
	}
	return &Owner{UID: int(st.Uid), GID: int(st.Gid)}, nil
}

// newPodDir makes the pod directory with _staged and _work, 0700 and
// owner's, under a temporary name, and renames it into place; fs.ErrExist
// if the pod directory is there already.
func (s *Server) newPodDir(pod layout.Pod, owner *Owner) error {
	tmp := fmt.Sprintf(".new-%d-%s", time.Now().UnixNano(), pod.Dir())
	if err := s.root.Mkdir(tmp, 0o700); err != nil {
		return err
	}
	err := func() error {
		for _, d := range []string{layout.StagedDir, layout.WorkDir} {
			if err := s.root.Mkdir(tmp+"/"+d, 0o700); err != nil {
				return err
			}
			if err := chown(s.root, tmp+"/"+d, owner); err != nil {
				return err
			}
		}
		if err := chown(s.root, tmp, owner); err != nil {
			return err
		}
		return s.root.Rename(tmp, pod.Dir())
	}()
	if err != nil {
		s.root.RemoveAll(tmp)
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return fs.ErrExist
		}
	}
	return err
}

// errOtherOwner refuses a pod directory that belongs to someone else.
var errOtherOwner = errors.New("the pod directory exists and belongs to another user")

// createPod makes the pod directory with its staging and work folders,
// owned by the pod's user and closed to everyone else (0700): the job runs
// as that user, the server as root. Idempotent; a directory that exists
// for another user is refused, not taken over.
func (s *Server) createPod(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	owner := s.cfg.Owner
	if u := r.URL.Query().Get("user"); u != "" {
		o, ok := s.cfg.Users[u]
		if !ok {
			writeError(w, http.StatusForbidden, fmt.Sprintf("user %q may not own pod directories on this endpoint (its -users list)", u))
			return
		}
		owner = &o
	}
	// Built under a temporary name and renamed into place: the directory
	// appears already closed and already its user's, and two creates
	// cannot race to own it.
	if err := s.newPodDir(pod, owner); err != nil && !errors.Is(err, fs.ErrExist) {
		s.fsError(w, "pod directory", err)
		return
	}
	pr, err := s.openPod(r, pod)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return
	}
	defer pr.Close()
	want := os.Geteuid()
	if owner != nil {
		want = owner.UID
	}
	if had, err := podOwner(pr); err != nil {
		s.fsError(w, "pod directory", err)
		return
	} else if had != nil && had.UID != want {
		s.fsError(w, "pod directory", errOtherOwner)
		return
	}
	if err := pr.Chmod(".", 0o700); err != nil { // a directory made by an older server was 0755
		s.fsError(w, "pod directory", err)
		return
	}
	// A pod re-created with the same UID is not deleted any more.
	pr.Remove(layout.DeletedMarker)
	s.log.Info("pod directory ready", "pod", pod.String())
	w.WriteHeader(http.StatusNoContent)
}

// openToRemove opens the pod directory for a removal; if it is gone
// already, or cannot be opened, it has answered (204: removals are
// idempotent) and reports false.
func (s *Server) openToRemove(w http.ResponseWriter, r *http.Request, pod layout.Pod) (*os.Root, bool) {
	pr, err := s.openPod(r, pod)
	if errors.Is(err, fs.ErrNotExist) {
		w.WriteHeader(http.StatusNoContent)
		return nil, false
	}
	if err != nil {
		s.fsError(w, "pod directory", err)
		return nil, false
	}
	return pr, true
}

// unstage removes what was staged for a pod (Secrets, ConfigMaps, image
// pull credentials) once its job has ended; logs stay. Idempotent.
func (s *Server) unstage(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	pr, ok := s.openToRemove(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	if err := pr.RemoveAll(layout.StagedDir); err != nil {
		s.fsError(w, layout.StagedDir, err)
		return
	}
	s.log.Info("staged files removed", "pod", pod.String())
	w.WriteHeader(http.StatusNoContent)
}

// deletePod removes the pod directory now, or, when a retention is
// configured, removes its staged files and scratch space (Secrets and
// emptyDir data go with the pod, as on a kubelet) and marks the rest, the
// output, for the janitor. Idempotent.
func (s *Server) deletePod(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	if s.cfg.Retention <= 0 {
		pr, ok := s.openToRemove(w, r, pod) // the caller may reach it
		if !ok {
			return
		}
		pr.Close()
		if err := s.root.RemoveAll(pod.Dir()); err != nil {
			s.fsError(w, "pod directory", err)
			return
		}
		s.log.Info("pod directory removed", "pod", pod.String())
		w.WriteHeader(http.StatusNoContent)
		return
	}
	pr, ok := s.openToRemove(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	for _, d := range []string{layout.StagedDir, layout.WorkDir} {
		if err := pr.RemoveAll(d); err != nil {
			s.fsError(w, d, err)
			return
		}
	}
	// The job owns the directory, so whatever it left where the marker
	// belongs (a symbolic link, a FIFO, a directory) is removed and the
	// marker made anew: a pod can never make itself undeletable.
	if fi, err := pr.Lstat(layout.DeletedMarker); err == nil && !fi.Mode().IsRegular() {
		if err := pr.RemoveAll(layout.DeletedMarker); err != nil {
			s.fsError(w, "deletion marker", err)
			return
		}
	}
	// O_NONBLOCK: should a FIFO appear meanwhile, the open fails (ENXIO)
	// instead of holding the request until a reader comes.
	f, err := pr.OpenFile(layout.DeletedMarker, os.O_CREATE|os.O_WRONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if err == nil {
		if fi, serr := f.Stat(); serr != nil || !fi.Mode().IsRegular() {
			err = errors.Join(serr, errNotRegular)
		}
		f.Close()
	}
	if errors.Is(err, syscall.ENXIO) {
		err = errNotRegular
	}
	if err != nil {
		s.fsError(w, "deletion marker", err)
		return
	}
	s.log.Info("pod directory marked for removal", "pod", pod.String(), "retention", s.cfg.Retention)
	w.WriteHeader(http.StatusNoContent)
}

// Janitor removes pod directories whose deletion marker is older than the
// retention, every interval, until ctx ends.
func (s *Server) Janitor(ctx context.Context, interval time.Duration) {
	if s.cfg.Retention <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.sweep(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) sweep(now time.Time) {
	d, err := s.root.Open(".")
	if err != nil {
		s.log.Error("janitor: open root", "err", err)
		return
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		s.log.Error("janitor: list root", "err", err)
		return
	}
	for _, name := range names {
		pod, err := layout.ParseDir(name)
		if err != nil {
			continue // not ours
		}
		st, err := s.root.Lstat(pod.Dir() + "/" + layout.DeletedMarker)
		if err != nil || now.Sub(st.ModTime()) < s.cfg.Retention {
			continue
		}
		if err := s.root.RemoveAll(name); err != nil {
			s.log.Error("janitor: remove pod directory", "pod", pod.String(), "err", err)
			continue
		}
		s.log.Info("janitor: pod directory removed", "pod", pod.String())
	}
}

// stage writes one file under the pod's staging directory atomically: a
// temporary file in the same directory, fsync, then rename.
func (s *Server) stage(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	rel := r.PathValue("path")
	if err := layout.ValidateStaged(rel); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	mode := os.FileMode(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v&^0o777 != 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("mode %q must be octal permission bits (e.g. 0600)", m))
			return
		}
		mode = os.FileMode(v)
	}
	// The body must arrive within a minute: a trickle cannot hold the
	// handler (16 MiB a minute is 270 KiB/s).
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Minute))
	if r.ContentLength > s.cfg.MaxUpload {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("file larger than %d bytes", s.cfg.MaxUpload))
		return
	}
	pr, err := s.openPod(r, pod)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return
	}
	defer pr.Close()
	target := layout.Staged(rel)
	dir := target[:strings.LastIndexByte(target, '/')]
	owner, err := podOwner(pr)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return
	}
	if err := pr.MkdirAll(dir, 0o755); err != nil {
		s.fsError(w, "staging directory", err)
		return
	}
	tmp := fmt.Sprintf("%s/.tmp-%d-%s", dir, time.Now().UnixNano(), target[len(dir)+1:])
	f, err := pr.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, mode)
	if err != nil {
		s.fsError(w, "staged file", err)
		return
	}
	n, err := io.Copy(f, http.MaxBytesReader(w, r.Body, s.cfg.MaxUpload))
	if err == nil {
		err = f.Sync()
	}
	// On the open file, not by name: the job may play with names in its
	// own directory, never with what this descriptor is.
	if err == nil {
		err = f.Chmod(mode) // the umask may have narrowed it
	}
	if err == nil && owner != nil {
		err = f.Chown(owner.UID, owner.GID)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = pr.Rename(tmp, target)
	}
	if err != nil {
		pr.Remove(tmp)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("file larger than %d bytes", s.cfg.MaxUpload))
			return
		}
		s.fsError(w, "staged file", err)
		return
	}
	s.m.staged.Add(float64(n))
	s.log.Info("file staged", "pod", pod.String(), "path", rel, "bytes", n, "mode", fmt.Sprintf("%04o", mode))
	w.WriteHeader(http.StatusNoContent)
}

// streamQuery is what a log read or info request names.
type streamQuery struct {
	container string
	attempt   int
	latest    bool // attempt=latest: the highest attempt the job has started
}

func parseStream(r *http.Request) (streamQuery, error) {
	q := streamQuery{container: r.PathValue("container")}
	if err := layout.ValidateContainer(q.container); err != nil {
		return q, err
	}
	if a := r.URL.Query().Get("attempt"); a == "latest" {
		q.latest = true
	} else if a != "" {
		n, err := strconv.Atoi(a)
		if err != nil {
			return q, fmt.Errorf("attempt %q is not a number", a)
		}
		q.attempt = n
	}
	return q, layout.ValidateAttempt(q.attempt)
}

// streamState is a container attempt's output as of one look.
type streamState struct {
	exists    bool  // the log file exists
	size      int64 // its size
	exited    bool  // the exit marker exists
	exitCode  int
	exitedAt  time.Time // the marker's mtime: when the container ended, by the compute node's clock
	mtime     time.Time // the log's mtime: when its last byte was written
	startedAt time.Time // the start marker's mtime, if there is one
	// reason and message, when the job script gave them (a pull failure).
	reason, message string
}

// maxMarker bounds what is read of an exit marker: the code, a reason
// and a runtime's message.
const maxMarker = 4096

// errNotRegular is a log or marker that is not a regular file: a job
// can plant a FIFO, a socket or a device node where its output should be.
var errNotRegular = fmt.Errorf("not a regular file: %w", syscall.ELOOP)

// openPlain opens a log or marker for reading: never through a symlink
// (O_NOFOLLOW) and regular files only. O_NONBLOCK keeps the open itself
// from waiting on a FIFO's writer (which would hold the request, and an
// OS thread, for ever); it has no effect on a regular file's reads.
func openPlain(pr *os.Root, name string) (*os.File, error) {
	f, err := pr.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ENXIO) { // a socket
		return nil, fmt.Errorf("%s: %w", name, errNotRegular)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%s: %w", name, errNotRegular)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openStream opens the pod's directory and looks at one container's
// output. On failure it has written the answer and reports false.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, pod layout.Pod, q *streamQuery) (*os.Root, streamState, bool) {
	pr, err := s.openPod(r, pod)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return nil, streamState{}, false
	}
	if q.latest {
		if q.attempt, err = latestAttempt(pr, q.container); err != nil {
			pr.Close()
			s.fsError(w, "container directory", err)
			return nil, streamState{}, false
		}
	}
	st, err := look(pr, *q)
	if err != nil {
		pr.Close()
		s.fsError(w, "log", err)
		return nil, streamState{}, false
	}
	return pr, st, true
}

// look reads the marker before the size: the job writes the marker after
// the last byte, so a size taken after seeing the marker is final.
func look(pr *os.Root, q streamQuery) (streamState, error) {
	var st streamState
	f, err := openPlain(pr, layout.ExitFile(q.container, q.attempt))
	switch {
	case err == nil:
		var b [maxMarker]byte
		n, _ := io.ReadFull(f, b[:])
		if fi, err := f.Stat(); err == nil {
			st.exitedAt = fi.ModTime()
		}
		f.Close()
		st.exited = true
		st.exitCode, st.reason, st.message = parseMarker(string(b[:n]))
	case !errors.Is(err, fs.ErrNotExist):
		return st, err
	}
	fi, err := pr.Lstat(layout.LogFile(q.container, q.attempt))
	switch {
	case err == nil:
		if !fi.Mode().IsRegular() {
			return st, fmt.Errorf("log: %w", syscall.ELOOP)
		}
		st.exists, st.size, st.mtime = true, fi.Size(), fi.ModTime()
	case !errors.Is(err, fs.ErrNotExist):
		return st, err
	}
	if fi, err := pr.Lstat(layout.StartFile(q.container, q.attempt)); err == nil && fi.Mode().IsRegular() {
		st.startedAt = fi.ModTime()
	}
	return st, nil
}

// maxAttemptScan bounds the entries of a container directory read to find
// its latest attempt (the job keeps two attempts' files; anything else in
// there is the job's own doing).
const maxAttemptScan = 4096

// latestAttempt is the highest attempt with a file in the container's
// directory; 0 when it has none yet.
func latestAttempt(pr *os.Root, container string) (int, error) {
	// O_DIRECTORY|O_NONBLOCK: a FIFO or device the job put in the
	// directory's place is refused at once, never waited on.
	d, err := pr.OpenFile(container, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer d.Close()
	latest, seen := 0, 0
	for seen < maxAttemptScan {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			if n, _, ok := layout.ParseAttemptFile(name); ok && n > latest {
				latest = n
			}
		}
		seen += len(names)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return latest, nil
}

// parseMarker reads an exit marker: the exit code on the first line, then
// optionally a reason (one word) and a message. A marker it cannot read
// still means the container ended: code -1.
func parseMarker(s string) (code int, reason, message string) {
	first, rest, _ := strings.Cut(s, "\n")
	code, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		code = -1
	}
	reason, message, _ = strings.Cut(rest, "\n")
	reason = strings.TrimSpace(reason)
	if strings.ContainsFunc(reason, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') }) || len(reason) > 64 {
		return code, "", ""
	}
	return code, reason, strings.TrimSpace(strings.ToValidUTF8(message, "\uFFFD"))
}

func (st streamState) setHeaders(h http.Header) {
	h.Set(fetch.HeaderSize, strconv.FormatInt(st.size, 10))
	if st.exited {
		h.Set(fetch.HeaderExitCode, strconv.Itoa(st.exitCode))
	}
}

// readLog serves output from an offset: at most max bytes (capped by the
// server), waiting up to wait for output beyond the offset.
func (s *Server) readLog(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	q, err := parseStream(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	params := r.URL.Query()
	offset, err := parseInt(params.Get("offset"), 0)
	if err != nil || offset < 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("offset %q must be a non-negative integer", params.Get("offset")))
		return
	}
	max, err := parseInt(params.Get("max"), s.cfg.MaxChunk)
	if err != nil || max <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("max %q must be a positive integer", params.Get("max")))
		return
	}
	if max > s.cfg.MaxChunk {
		max = s.cfg.MaxChunk
	}
	var wait time.Duration
	if v := params.Get("wait"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("wait %q must be a duration such as 30s", v))
			return
		}
		if wait > s.cfg.MaxWait {
			wait = s.cfg.MaxWait
		}
	}
	wantTimes := params.Get("times") == "1"
	pr, st, ok := s.openStream(w, r, pod, &q)
	if !ok {
		return
	}
	defer pr.Close()
	if wait > 0 && st.size <= offset && !st.exited {
		if code, why := s.polls.acquire(callerOf(r), pod.Dir(), s.cfg.MaxLongPolls, s.cfg.MaxLongPollsPerPod, s.clientCap()); code != 0 {
			w.Header().Set("Retry-After", "1")
			writeError(w, code, why)
			return
		}
		defer s.polls.release(callerOf(r), pod.Dir())
		if st, err = s.waitForOutput(r.Context(), pod, pr, q, offset, wait); err != nil {
			if r.Context().Err() != nil {
				return // the client went away
			}
			s.fsError(w, "log", err)
			return
		}
	}
	if offset > st.size {
		st.setHeaders(w.Header())
		writeError(w, http.StatusRequestedRangeNotSatisfiable, fmt.Sprintf("offset %d is past the end of the output (%d bytes)", offset, st.size))
		return
	}
	n := st.size - offset
	if n > max {
		n = max
	}
	next := offset + n
	h := w.Header()
	if wantTimes && n > 0 {
		recs, err := s.times(pr, q, st, offset, next)
		if err != nil {
			s.fsError(w, "time index", err)
			return
		}
		if last := recs[len(recs)-1].End; last < next {
			next, n = last, last-offset // more records than a header holds
		}
		h.Set(fetch.HeaderTimes, formatTimes(recs))
	}
	st.setHeaders(h)
	h.Set(fetch.HeaderOffset, strconv.FormatInt(offset, 10))
	h.Set(fetch.HeaderNext, strconv.FormatInt(next, 10))
	h.Set(fetch.HeaderComplete, strconv.FormatBool(st.exited && next == st.size))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	if n == 0 {
		w.WriteHeader(http.StatusOK)
		return
	}
	f, err := openPlain(pr, layout.LogFile(q.container, q.attempt))
	if err != nil {
		h.Del("Content-Length")
		s.fsError(w, "log", err)
		return
	}
	defer f.Close()
	w.WriteHeader(http.StatusOK)
	// A short copy (client gone) leaves the body short of Content-Length,
	// which the client sees as a broken answer and retries from what it got.
	copied, _ := io.Copy(w, io.NewSectionReader(f, offset, n))
	s.m.bytes.Add(float64(copied))
}

// times returns the records that time the bytes [from, to) of a log: the
// job's time index, then, past its end, the log's own size and mtime.
// The last record reaches to, unless there were more than a header
// holds.
func (s *Server) times(pr *os.Root, q streamQuery, st streamState, from, to int64) ([]logtime.Record, error) {
	var recs []logtime.Record
	f, err := openPlain(pr, layout.TimesFile(q.container, q.attempt))
	switch {
	case err == nil:
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return nil, err
		}
		if recs, err = logtime.NewIndex(f, fi.Size()).Range(from, to, fetch.MaxTimes-1); err != nil {
			return nil, err
		}
		if len(recs) == fetch.MaxTimes-1 && recs[len(recs)-1].End < to {
			return recs, nil
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if len(recs) == 0 || recs[len(recs)-1].End < to {
		recs = append(recs, logtime.Tail(st.size, st.mtime, recs))
	}
	return recs, nil
}

func formatTimes(recs []logtime.Record) string {
	b := make([]byte, 0, len(recs)*32)
	for i, r := range recs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, r.End, 10)
		b = append(b, ':')
		b = strconv.AppendInt(b, r.Time, 10)
	}
	return string(b)
}

// sinceOffset is where the first line written at or after t starts: by
// the time index, and past its end by the log's mtime (without an index,
// the whole log has that one time).
func (s *Server) sinceOffset(ctx context.Context, pr *os.Root, q streamQuery, st streamState, t time.Time) (int64, error) {
	if !st.exists {
		return 0, nil
	}
	off, end := st.size, int64(0)
	f, err := openPlain(pr, layout.TimesFile(q.container, q.attempt))
	switch {
	case err == nil:
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return 0, err
		}
		x := logtime.NewIndex(f, fi.Size())
		o, ok, err := x.Since(t)
		if err == nil && !ok {
			end, err = x.End()
		}
		f.Close()
		if err != nil {
			return 0, err
		}
		if ok {
			off = o
			break
		}
		if !st.mtime.Before(t) {
			off = min(end, st.size)
		}
	case errors.Is(err, fs.ErrNotExist):
		if !st.mtime.Before(t) {
			off = 0
		}
	default:
		return 0, err
	}
	off = max(0, min(off, st.size)) // the index is the job's: trust no offset in it
	if off >= st.size || off == 0 {
		return off, nil
	}
	lf, err := openPlain(pr, layout.LogFile(q.container, q.attempt))
	if err != nil {
		return 0, err
	}
	defer lf.Close()
	return LineStart(ctx, lf, off, st.size)
}

// LineStart returns the start of the first line that starts at or after
// off in the first size bytes of r: off itself after a newline, else just
// past the next newline (size when there is none), looking at most
// MaxTailScan bytes ahead.
func LineStart(ctx context.Context, r io.ReaderAt, off, size int64) (int64, error) {
	if off <= 0 || off >= size {
		return off, nil
	}
	var one [1]byte
	if _, err := r.ReadAt(one[:], off-1); err != nil {
		return 0, err
	}
	if one[0] == '\n' {
		return off, nil
	}
	buf := make([]byte, 64<<10)
	for at := off; at < size; at += int64(len(buf)) {
		if at-off >= MaxTailScan {
			return at, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		chunk := buf[:min(int64(len(buf)), size-at)]
		if _, err := r.ReadAt(chunk, at); err != nil && err != io.EOF {
			return 0, err
		}
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			return at + int64(i) + 1, nil
		}
	}
	return size, nil
}

// waitForOutput blocks until the log grows past offset, the exit marker
// appears, wait passes or ctx ends, and returns the state then.
func (s *Server) waitForOutput(ctx context.Context, pod layout.Pod, pr *os.Root, q streamQuery, offset int64, wait time.Duration) (streamState, error) {
	s.m.longPolls.Inc()
	defer s.m.longPolls.Dec()
	// Watch the container directory, or the pod directory until the job
	// creates it; the poll covers writes inotify cannot see.
	dir := pod.Path(s.cfg.Root, q.container)
	if _, err := pr.Lstat(q.container); err != nil {
		dir = pod.Path(s.cfg.Root)
	}
	events, stop := s.watch.subscribe(dir)
	defer stop()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(s.cfg.PollInterval)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return streamState{}, ctx.Err()
		case <-deadline.C:
			return look(pr, q)
		case <-events:
		case <-poll.C:
		}
		st, err := look(pr, q)
		if err != nil || st.size > offset || st.exited {
			return st, err
		}
	}
}

// info reports a stream's size and state, and where its last tail_lines
// lines start.
func (s *Server) info(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	q, err := parseStream(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	tail := int64(-1)
	if v := r.URL.Query().Get("tail_lines"); v != "" {
		if tail, err = strconv.ParseInt(v, 10, 64); err != nil || tail < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tail_lines %q must be a non-negative integer", v))
			return
		}
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since %q must be an RFC 3339 time", v))
			return
		}
	}
	pr, st, ok := s.openStream(w, r, pod, &q)
	if !ok {
		return
	}
	defer pr.Close()
	body := st.info(q.attempt)
	if !since.IsZero() {
		off, err := s.sinceOffset(r.Context(), pr, q, st, since)
		if err != nil {
			s.fsError(w, "log", err)
			return
		}
		body.SinceOffset = &off
	}
	if tail >= 0 {
		off := st.size
		if st.exists && tail > 0 {
			f, err := openPlain(pr, layout.LogFile(q.container, q.attempt))
			if err != nil {
				s.fsError(w, "log", err)
				return
			}
			off, err = TailOffset(r.Context(), f, st.size, tail)
			f.Close()
			if err != nil {
				s.fsError(w, "log", err)
				return
			}
		}
		body.TailOffset = &off
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(body)
}

// info is the protocol's view of a stream state.
func (st streamState) info(attempt int) fetch.Info {
	body := fetch.Info{Attempt: attempt, Exists: st.exists, Size: st.size, Exited: st.exited}
	if st.exited {
		body.ExitCode = &st.exitCode
		body.Reason, body.Message = st.reason, st.message
		if !st.exitedAt.IsZero() {
			body.ExitedAt = &st.exitedAt
		}
	}
	if !st.startedAt.IsZero() {
		body.StartedAt = &st.startedAt
	}
	return body
}

// maxContainers bounds the containers one containers request names.
const maxContainers = 128

// containers reports, for each container named (?name=, repeated), its
// latest attempt and the one before: what a pod's status is made of, in
// one request.
func (s *Server) containers(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	names := r.URL.Query()["name"]
	if len(names) == 0 || len(names) > maxContainers {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name 1 to %d containers", maxContainers))
		return
	}
	for _, n := range names {
		if err := layout.ValidateContainer(n); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	pr, err := s.openPod(r, pod)
	if err != nil {
		s.fsError(w, "pod directory", err)
		return
	}
	defer pr.Close()
	out := map[string]fetch.Container{}
	for _, n := range names {
		latest, err := latestAttempt(pr, n)
		if err != nil {
			s.fsError(w, "container directory", err)
			return
		}
		q := streamQuery{container: n, attempt: latest}
		st, err := look(pr, q)
		if err != nil {
			s.fsError(w, "log", err)
			return
		}
		c := fetch.Container{Current: st.info(latest)}
		if latest > 0 {
			q.attempt--
			if st, err = look(pr, q); err != nil {
				s.fsError(w, "log", err)
				return
			}
			prev := st.info(q.attempt)
			c.Previous = &prev
		}
		out[n] = c
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// MaxTailScan bounds how far back TailOffset looks for line starts: output
// without newlines (a progress bar, binary data) would otherwise be read
// whole for one --tail. Past it, the tail starts at the bound.
const MaxTailScan = 16 << 20

// TailOffset returns the offset where the last n lines of the first size
// bytes of r start, reading backwards in blocks (never the whole file, and
// at most MaxTailScan bytes: past that the tail starts there). A final
// newline ends the last line; a last line without one still counts. It
// stops with ctx's error when ctx ends (the client went away).
func TailOffset(ctx context.Context, r io.ReaderAt, size, n int64) (int64, error) {
	if n <= 0 {
		return size, nil
	}
	const block = 64 << 10
	buf := make([]byte, block)
	end := size
	first := true
	var found int64
	for end > 0 {
		if size-end >= MaxTailScan {
			return end, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		start := end - block
		if start < 0 {
			start = 0
		}
		chunk := buf[:end-start]
		if _, err := r.ReadAt(chunk, start); err != nil && err != io.EOF {
			return 0, err
		}
		i := len(chunk) - 1
		if first {
			first = false
			if chunk[i] == '\n' {
				i-- // the final newline ends the last line, it starts none
			}
		}
		for ; i >= 0; i-- {
			if chunk[i] == '\n' {
				found++
				if found == n {
					return start + int64(i) + 1, nil
				}
			}
		}
		end = start
	}
	return 0, nil
}

func parseInt(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// callerOf is the request's authenticated caller.
func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	return c
}

// clientCap is how many waiting reads one client may hold when there are
// several: an equal share of the server's, so that no node starves the
// others' kubectl logs -f.
func (s *Server) clientCap() int {
	if len(s.callers) < 2 {
		return s.cfg.MaxLongPolls
	}
	return max(s.cfg.MaxLongPolls/len(s.callers), s.cfg.MaxLongPollsPerPod)
}

// polls counts the log reads waiting: in all, per client and per pod.
type polls struct {
	mu        sync.Mutex
	total     int
	perClient map[*caller]int
	perPod    map[string]int
}

// acquire takes a place for one more waiting read, or says why there is
// none: the HTTP status and a reason.
func (p *polls) acquire(c *caller, pod string, max, perPod, perClient int) (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.perPod[pod] >= perPod:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads already wait on this pod; retry later", perPod)
	case p.total >= max:
		return http.StatusServiceUnavailable, fmt.Sprintf("%d log reads already wait on this server; retry later", max)
	case p.perClient[c] >= perClient:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads of this client already wait; retry later", perClient)
	}
	p.total++
	p.perClient[c]++
	p.perPod[pod]++
	return 0, ""
}

func (p *polls) release(c *caller, pod string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total--
	if p.perClient[c]--; p.perClient[c] <= 0 {
		delete(p.perClient, c)
	}
	if p.perPod[pod]--; p.perPod[pod] <= 0 {
		delete(p.perPod, pod)
	}
}
