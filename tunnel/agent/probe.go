package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/tunnel"
)

// Probes run beside the containers, as a kubelet runs them beside its
// own: the job script restarts a container (run), the agent only watches
// each attempt, from its PID file to its exit marker. Per attempt it runs
// the postStart hook, then the startup probe, then liveness and readiness.
// What the provider reads of them are two empty files in the container's
// directory (fetch/layout's KindReady, KindStarted); a failed liveness or
// startup probe, or postStart hook, stops the container, which run then
// restarts under the pod's restart policy, as a kubelet's would be.
//
// Network probes go to 127.0.0.1 when they name no host: the pod's
// address on a node whose containers all share its network.

// ProbeConfig is what RunProbes watches.
type ProbeConfig struct {
	Probes tunnel.Probes
	// PodDir holds a directory per container with its attempts' files.
	PodDir     string
	Containers Containers
	Logger     *slog.Logger
}

// watchPoll is how often an attempt's start and end are looked for.
var watchPoll = 200 * time.Millisecond

// RunProbes watches every container with probes or a postStart hook until
// ctx ends.
func RunProbes(ctx context.Context, cfg ProbeConfig) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	done := make(chan struct{})
	n := 0
	for _, cp := range cfg.Probes.Containers {
		if !containerName.MatchString(cp.Name) {
			cfg.Logger.Error("probes for a container with a bad name", "container", cp.Name)
			continue
		}
		n++
		go func() {
			defer func() { done <- struct{}{} }()
			w := &watcher{cfg: cfg, cp: cp, log: cfg.Logger.With("container", cp.Name)}
			w.run(ctx)
		}()
	}
	for range n {
		<-done
	}
}

type watcher struct {
	cfg ProbeConfig
	cp  tunnel.ContainerProbes
	log *slog.Logger
}

// attempt is a running attempt: its number and main process.
type attempt struct {
	n   int
	pid int
}

func (w *watcher) run(ctx context.Context) {
	var last attempt
	for ctx.Err() == nil {
		a, ok := w.current()
		if !ok || a == last {
			sleep(ctx, watchPoll)
			continue
		}
		last = a
		actx, cancel := context.WithCancel(ctx)
		go func() { // the attempt's end ends its probes
			defer cancel()
			for actx.Err() == nil {
				if cur, ok := w.current(); !ok || cur != a {
					return
				}
				sleep(actx, watchPoll)
			}
		}()
		w.attempt(actx, a)
		<-actx.Done()
	}
}

// current is the running attempt: the PID file's process, and the
// latest attempt with a start marker and no exit marker.
func (w *watcher) current() (attempt, bool) {
	data, err := os.ReadFile(filepath.Join(w.cfg.Containers.PIDDir, w.cp.Name))
	if err != nil {
		return attempt{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return attempt{}, false
	}
	dir := filepath.Join(w.cfg.PodDir, w.cp.Name)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return attempt{}, false
	}
	n, found := -1, false
	for _, e := range entries {
		if a, kind, ok := layout.ParseAttemptFile(e.Name()); ok && kind == layout.KindStart && a > n {
			n, found = a, true
		}
	}
	if !found {
		return attempt{}, false
	}
	if _, err := os.Lstat(filepath.Join(w.cfg.PodDir, layout.ExitFile(w.cp.Name, n))); err == nil {
		return attempt{}, false
	}
	return attempt{n: n, pid: pid}, true
}

// attempt runs one attempt's hook and probes until it ends or one of
// them stops it.
func (w *watcher) attempt(ctx context.Context, a attempt) {
	began := time.Now()
	if h := w.cp.PostStart; h != nil {
		if err := runHandler(ctx, w.cfg.Containers, w.cp.Name, h, 0); err != nil {
			if ctx.Err() == nil {
				w.log.Warn("postStart hook failed: stopping the container", "err", err)
				w.stop(ctx, a, w.cp.Grace)
			}
			return
		}
		w.flag(a, layout.KindPostStart, true)
	}
	if p := w.cp.Startup; p != nil {
		if !w.probe(ctx, a, p, began, "startup", func(ok bool) bool { return ok }) {
			return
		}
		w.flag(a, layout.KindStarted, true)
	}
	if p := w.cp.Readiness; p != nil {
		go w.probe(ctx, a, p, began, "readiness", func(ok bool) bool {
			w.flag(a, layout.KindReady, ok)
			return false
		})
	}
	if p := w.cp.Liveness; p != nil {
		w.probe(ctx, a, p, began, "liveness", func(bool) bool { return false })
	}
}

// probe runs p every period from its initial delay after began. changed
// is told each change of the probe's result (past its thresholds) and
// ends the probe by returning true. A startup or liveness probe that
// fails failureThreshold times in a row stops the container; probe then
// returns false.
func (w *watcher) probe(ctx context.Context, a attempt, p *tunnel.Probe, began time.Time, kind string, changed func(ok bool) bool) bool {
	stops := kind != "readiness"
	if !sleep(ctx, time.Until(began.Add(time.Duration(p.InitialDelay)*time.Second))) {
		return false
	}
	period := time.Duration(max(p.Period, 1)) * time.Second
	var state *bool // as last reported
	succ, fail := 0, 0
	for {
		err := runHandler(ctx, w.cfg.Containers, w.cp.Name, &p.Handler, time.Duration(max(p.Timeout, 1))*time.Second)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			succ, fail = succ+1, 0
		} else {
			succ, fail = 0, fail+1
			w.log.Debug(kind+" probe failed", "err", err)
		}
		switch {
		case succ >= max(p.SuccessThreshold, 1) && (state == nil || !*state):
			state = ptr(true)
			if changed(true) {
				return true
			}
		case fail >= max(p.FailureThreshold, 1) && (state == nil || *state || stops):
			state = ptr(false)
			if stops {
				grace := w.cp.Grace
				if p.Grace != nil {
					grace = *p.Grace
				}
				w.log.Warn(kind+" probe failed: stopping the container", "err", err, "failures", fail)
				w.stop(ctx, a, grace)
				return false
			}
			changed(false)
		}
		if !sleep(ctx, period) {
			return false
		}
	}
}

func ptr[T any](v T) *T { return &v }

// flag creates or removes one of the attempt's probe files.
func (w *watcher) flag(a attempt, kind string, on bool) {
	name := filepath.Join(w.cfg.PodDir, w.cp.Name, layout.AttemptName(strconv.Itoa(a.n), kind))
	if !on {
		if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			w.log.Warn("clear a probe's result", "err", err)
		}
		return
	}
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o644)
	if err != nil {
		w.log.Warn("record a probe's result", "err", err)
		return
	}
	f.Close()
}

// hook runs a lifecycle hook's handler the provider sent (preStop, before
// it stops the pod's job) against the container, until it ends or the
// session does (the provider bounds it by the grace period).
func hook(ctx context.Context, cs Containers, st net.Conn, req tunnel.Request) tunnel.Exit {
	if req.Hook == nil {
		return tunnel.Exit{Code: -1, Error: "a hook session without a hook"}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // the provider closing the session ends the hook
		var b [1]byte
		st.Read(b[:])
		cancel()
	}()
	if err := runHandler(ctx, cs, req.Container, req.Hook, 0); err != nil {
		return tunnel.Exit{Code: 1, Error: err.Error()}
	}
	return tunnel.Exit{}
}

// runHandler runs a handler once against the container; timeout 0:
// until ctx ends.
func runHandler(ctx context.Context, cs Containers, container string, h *tunnel.Handler, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	switch {
	case len(h.Exec) > 0:
		return execIn(ctx, cs, container, h.Exec)
	case h.HTTP != nil:
		return httpGet(ctx, h.HTTP)
	case h.TCP != nil:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host(h.TCP.Host), strconv.Itoa(h.TCP.Port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case h.GRPC != nil:
		return grpcCheck(ctx, h.GRPC)
	case h.Sleep > 0:
		if !sleep(ctx, time.Duration(h.Sleep)*time.Second) {
			return ctx.Err()
		}
		return nil
	}
	return errors.New("a handler with nothing to do")
}

func host(h string) string {
	if h == "" {
		return "127.0.0.1"
	}
	return h
}

// execIn runs argv in the container, as kubectl exec would; a non-zero
// exit or the timeout is a failure.
func execIn(ctx context.Context, cs Containers, container string, argv []string) error {
	cmd, err := commandFor(ctx, cs, tunnel.Request{Container: container, Command: argv})
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer stop()
	err = cmd.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("timed out: %w", ctx.Err())
	}
	return err
}

// probeUserAgent is what a kubelet's HTTP probes say they are.
const probeUserAgent = "kube-probe/slurm-vk"

func httpGet(ctx context.Context, g *tunnel.HTTPGet) error {
	scheme := strings.ToLower(g.Scheme)
	if scheme == "" {
		scheme = "http"
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host(g.Host), strconv.Itoa(g.Port))}
	path := g.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	ref, err := url.Parse(path)
	if err != nil {
		return err
	}
	u = u.ResolveReference(ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", probeUserAgent)
	req.Header.Set("Accept", "*/*")
	for _, h := range g.Headers {
		if strings.EqualFold(h[0], "Host") {
			req.Host = h[1]
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	client := &http.Client{
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true, Proxy: nil},
		// As a kubelet: redirects on the same host are followed (10 at
		// most); one to another host is the answer, a success.
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 10 {
				return errors.New("too many redirects")
			}
			if r.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
	}
	return nil
}

func grpcCheck(ctx context.Context, g *tunnel.GRPCGet) error {
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", strconv.Itoa(g.Port)), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent(probeUserAgent))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: g.Service})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("service unhealthy (responded with %q)", resp.GetStatus())
	}
	return nil
}

// stop stops the attempt's container, as a kubelet kills one: TERM, then
// KILL once grace seconds are over. podman's container is conmon's, not
// the job's process: podman stop does both.
func (w *watcher) stop(ctx context.Context, a attempt, grace int) {
	if w.cfg.Containers.Runtime == "podman" {
		proc, err := w.cfg.Containers.find(w.cp.Name)
		if err == nil && proc.pid == a.pid {
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", a.pid)); err == nil && filepath.Base(exe) == "podman" {
				if job := os.Getenv("SLURM_JOB_ID"); job != "" {
					cmd := exec.Command(exe, "stop", "--time", strconv.Itoa(grace), "slurm-vk-"+job+"-"+w.cp.Name)
					cmd.Env, cmd.Dir = proc.env, "/"
					if out, err := cmd.CombinedOutput(); err != nil {
						w.log.Warn("podman stop", "err", err, "output", strings.TrimSpace(string(out)))
					}
					return
				}
			}
		}
	}
	// The container's process group is its own (the job script's run):
	// what it started goes with it. Never the agent's own group.
	target := a.pid
	if pgid, err := syscall.Getpgid(a.pid); err == nil && pgid == a.pid && pgid != syscall.Getpgrp() {
		target = -pgid
	}
	syscall.Kill(target, syscall.SIGTERM)
	if !sleep(ctx, time.Duration(grace)*time.Second) {
		return // it ended (or the agent is stopping)
	}
	syscall.Kill(target, syscall.SIGKILL)
}

// sleep waits d or until ctx ends, and says whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
