package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/tunnel"
)

// probeRig is a pod directory as the job script keeps it, with one
// container ("main", runtime none) whose attempts are real processes.
type probeRig struct {
	t      *testing.T
	podDir string
	cwd    string // the container's working directory
	proc   *exec.Cmd
	n      int
	exited chan struct{}
}

func newProbeRig(t *testing.T) *probeRig {
	r := &probeRig{t: t, podDir: t.TempDir(), cwd: t.TempDir(), n: -1}
	for _, d := range []string{layout.PIDsDir, "main"} {
		if err := os.MkdirAll(filepath.Join(r.podDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(r.end)
	return r
}

// start begins the next attempt as run does: its own process group, the
// PID file, then the start marker.
func (r *probeRig) start() {
	r.n++
	r.proc = exec.Command("sleep", "1000")
	r.proc.Env, r.proc.Dir = []string{"PATH=/usr/bin:/bin"}, r.cwd
	r.proc.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.proc.Start(); err != nil {
		r.t.Fatal(err)
	}
	exited := make(chan struct{})
	r.exited = exited
	go func(c *exec.Cmd) { c.Wait(); close(exited) }(r.proc)
	r.write(filepath.Join(layout.PIDsDir, "main"), strconv.Itoa(r.proc.Process.Pid))
	r.write(layout.StartFile("main", r.n), "")
}

// end ends the attempt as run does: the PID file goes, the marker comes.
func (r *probeRig) end() {
	if r.proc == nil {
		return
	}
	r.proc.Process.Kill()
	<-r.exited
	os.Remove(filepath.Join(r.podDir, layout.PIDsDir, "main"))
	r.write(layout.ExitFile("main", r.n), "137\n")
	r.proc = nil
}

func (r *probeRig) write(rel, data string) {
	if err := os.WriteFile(filepath.Join(r.podDir, rel), []byte(data), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// run starts the agent's probes for "main".
func (r *probeRig) run(cp tunnel.ContainerProbes) {
	cp.Name = "main"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		RunProbes(ctx, ProbeConfig{Probes: tunnel.Probes{Containers: []tunnel.ContainerProbes{cp}}, PodDir: r.podDir,
			Containers: Containers{PIDDir: filepath.Join(r.podDir, layout.PIDsDir), Runtime: "none"},
			Logger:     slog.New(slog.NewTextHandler(io.Discard, nil))})
		close(done)
	}()
	r.t.Cleanup(func() { cancel(); <-done })
}

// flag reports whether the attempt's probe file (ready, started) exists.
func (r *probeRig) flag(n int, kind string) bool {
	_, err := os.Lstat(filepath.Join(r.podDir, "main", layout.AttemptName(strconv.Itoa(n), kind)))
	return err == nil
}

// until waits (generously: probes run each second) for cond.
func (r *probeRig) until(what string, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("never: %s", what)
		}
	}
}

// holds checks that cond stays true for d.
func (r *probeRig) holds(what string, d time.Duration, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !cond() {
			r.t.Fatalf("not for %v: %s", d, what)
		}
	}
}

func (r *probeRig) alive() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

func exists(path string) []string { return []string{"test", "-e", path} }

// TestReadinessProbe: exec readiness in the container's own directory
// and PATH, after its thresholds: not ready until the file is there, then
// ready; not ready again after failureThreshold failures; a new attempt
// starts not ready.
func TestReadinessProbe(t *testing.T) {
	t.Parallel()
	r := newProbeRig(t)
	r.start()
	r.run(tunnel.ContainerProbes{Readiness: &tunnel.Probe{Handler: tunnel.Handler{Exec: exists("healthy")}, Period: 1, Timeout: 1, SuccessThreshold: 2, FailureThreshold: 2}})
	r.holds("not ready without the file", 2500*time.Millisecond, func() bool { return !r.flag(0, layout.KindReady) })
	began := time.Now()
	os.WriteFile(filepath.Join(r.cwd, "healthy"), nil, 0o644)
	r.until("ready once the file is there", func() bool { return r.flag(0, layout.KindReady) })
	if time.Since(began) < time.Second {
		t.Errorf("ready after %v: successThreshold 2 at a period of 1 s takes a second at least", time.Since(began))
	}
	os.Remove(filepath.Join(r.cwd, "healthy"))
	r.until("not ready once the file is gone", func() bool { return !r.flag(0, layout.KindReady) })
	if !r.alive() {
		t.Error("a failed readiness probe stopped the container")
	}
	os.WriteFile(filepath.Join(r.cwd, "healthy"), nil, 0o644)
	r.until("ready again", func() bool { return r.flag(0, layout.KindReady) })
	r.end()
	r.start()
	r.until("the next attempt ready", func() bool { return r.flag(1, layout.KindReady) })
}

// TestLivenessProbeStopsTheContainer: failureThreshold failures in a row
// stop the container (TERM to its process group); successes keep it.
func TestLivenessProbeStopsTheContainer(t *testing.T) {
	t.Parallel()
	r := newProbeRig(t)
	os.WriteFile(filepath.Join(r.cwd, "healthy"), nil, 0o644)
	r.start()
	r.run(tunnel.ContainerProbes{Grace: 30, Liveness: &tunnel.Probe{Handler: tunnel.Handler{Exec: exists("healthy")}, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 2}})
	r.holds("alive while the probe passes", 2500*time.Millisecond, r.alive)
	os.Remove(filepath.Join(r.cwd, "healthy"))
	r.until("stopped once the probe failed twice", func() bool { return !r.alive() })
}

// TestStartupProbeGatesLiveness: liveness does not run before the startup
// probe passed (it would have stopped the container); started is marked.
func TestStartupProbeGatesLiveness(t *testing.T) {
	t.Parallel()
	r := newProbeRig(t)
	r.start()
	r.run(tunnel.ContainerProbes{Grace: 30,
		Startup:  &tunnel.Probe{Handler: tunnel.Handler{Exec: exists("started")}, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 60},
		Liveness: &tunnel.Probe{Handler: tunnel.Handler{Exec: exists("healthy")}, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 1}})
	r.holds("alive and not started before the startup probe passes", 2500*time.Millisecond, func() bool { return r.alive() && !r.flag(0, layout.KindStarted) })
	os.WriteFile(filepath.Join(r.cwd, "started"), nil, 0o644)
	r.until("started", func() bool { return r.flag(0, layout.KindStarted) })
	r.until("stopped by liveness once started", func() bool { return !r.alive() })
}

// TestStartupProbeFails: a startup probe that never passes stops the
// container after failureThreshold periods.
func TestStartupProbeFails(t *testing.T) {
	t.Parallel()
	r := newProbeRig(t)
	r.start()
	r.run(tunnel.ContainerProbes{Grace: 30, Startup: &tunnel.Probe{Handler: tunnel.Handler{Exec: []string{"false"}}, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 2}})
	r.until("stopped", func() bool { return !r.alive() })
	if r.flag(0, layout.KindStarted) {
		t.Error("marked started")
	}
}

// TestExecProbeTimeout: a probe command that outlives timeoutSeconds
// fails (and is killed).
func TestExecProbeTimeout(t *testing.T) {
	t.Parallel()
	r := newProbeRig(t)
	r.start()
	r.run(tunnel.ContainerProbes{Readiness: &tunnel.Probe{Handler: tunnel.Handler{Exec: []string{"sleep", "5"}}, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 1}})
	r.holds("never ready", 4*time.Second, func() bool { return !r.flag(0, layout.KindReady) })
}

// TestNetworkProbes: httpGet (status, path, headers, a redirect), tcpSocket
// and grpc, against real servers on loopback.
func TestNetworkProbes(t *testing.T) {
	t.Parallel()
	var healthy atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.URL.Path == "/moved":
			http.Redirect(w, req, "/healthz", http.StatusFound)
		case req.URL.Path != "/healthz" || req.Header.Get("X-Probe") != "yes" || req.UserAgent() != probeUserAgent:
			http.Error(w, "wrong request", http.StatusNotFound)
		case !healthy.Load():
			http.Error(w, "unhealthy", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(gl)
	defer gs.Stop()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	quick := func(h tunnel.Handler) *tunnel.Probe {
		return &tunnel.Probe{Handler: h, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 1}
	}
	hdr := [][2]string{{"X-Probe", "yes"}}
	for _, tc := range []struct {
		name          string
		probe         *tunnel.Probe
		healthy, sick func()
	}{
		{"http", quick(tunnel.Handler{HTTP: &tunnel.HTTPGet{Scheme: "HTTP", Port: port, Path: "/healthz", Headers: hdr}}),
			func() { healthy.Store(true) }, func() { healthy.Store(false) }},
		{"http redirect", quick(tunnel.Handler{HTTP: &tunnel.HTTPGet{Scheme: "HTTP", Port: port, Path: "moved", Headers: hdr}}),
			func() { healthy.Store(true) }, func() { healthy.Store(false) }},
		{"tcp", quick(tunnel.Handler{TCP: &tunnel.TCPProbe{Port: ln.Addr().(*net.TCPAddr).Port}}), nil, nil},
		{"grpc", quick(tunnel.Handler{GRPC: &tunnel.GRPCGet{Port: gl.Addr().(*net.TCPAddr).Port}}),
			func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING) },
			func() { hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newProbeRig(t)
			r.start()
			if tc.sick != nil {
				tc.sick()
			}
			r.run(tunnel.ContainerProbes{Readiness: tc.probe})
			if tc.sick != nil {
				r.holds("not ready while unhealthy", 2500*time.Millisecond, func() bool { return !r.flag(0, layout.KindReady) })
				tc.healthy()
			}
			r.until("ready", func() bool { return r.flag(0, layout.KindReady) })
			if tc.sick != nil {
				tc.sick()
				r.until("not ready again", func() bool { return !r.flag(0, layout.KindReady) })
			}
		})
	}
	t.Run("tcp refused", func(t *testing.T) {
		closed, _ := net.Listen("tcp", "127.0.0.1:0")
		p := closed.Addr().(*net.TCPAddr).Port
		closed.Close()
		r := newProbeRig(t)
		r.start()
		r.run(tunnel.ContainerProbes{Readiness: quick(tunnel.Handler{TCP: &tunnel.TCPProbe{Port: p}})})
		r.holds("never ready", 2500*time.Millisecond, func() bool { return !r.flag(0, layout.KindReady) })
	})
}

// TestPostStartHook: it runs in the container (its directory) before any
// probe; one that fails stops the container.
func TestPostStartHook(t *testing.T) {
	t.Parallel()
	t.Run("runs", func(t *testing.T) {
		t.Parallel()
		r := newProbeRig(t)
		r.start()
		r.run(tunnel.ContainerProbes{Grace: 30, PostStart: &tunnel.Handler{Exec: []string{"touch", "hooked"}},
			Readiness: &tunnel.Probe{Handler: tunnel.Handler{Exec: exists("hooked")}, Period: 1, Timeout: 1, SuccessThreshold: 1, FailureThreshold: 1}})
		r.until("ready after the hook", func() bool { return r.flag(0, layout.KindReady) })
		if !r.alive() {
			t.Error("the container was stopped")
		}
		if !r.flag(0, layout.KindPostStart) {
			t.Error("no poststart flag: the provider would never see the container running")
		}
	})
	t.Run("fails", func(t *testing.T) {
		t.Parallel()
		r := newProbeRig(t)
		r.start()
		r.run(tunnel.ContainerProbes{Grace: 30, PostStart: &tunnel.Handler{Exec: []string{"false"}}})
		r.until("stopped", func() bool { return !r.alive() })
		if r.flag(0, layout.KindPostStart) {
			t.Error("a failed hook flagged as run")
		}
	})
}
