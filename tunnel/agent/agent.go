// Package agent is the tunnel's party inside the job: it connects out to
// the fetch endpoint for one pod, and runs what the provider's sessions ask
// (exec in a container; port-forward later) as the job's user, inside the
// job's cgroup. It never listens on a port.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/hashicorp/yamux"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// Config says where the agent connects and which pod it serves.
type Config struct {
	// URL is the fetch endpoint as the compute nodes reach it.
	URL    string
	CAFile string
	// Namespace, Name and UID name the pod.
	Namespace, Name, UID string
	// TokenFile is the pod's agent token (in its staged files).
	TokenFile string
	// Containers says how to enter each container: see Containers.
	Containers Containers
	// MaxSessions bounds the sessions served at once (default 16).
	MaxSessions int
	Logger      *slog.Logger
}

// Run connects and serves until ctx ends, reconnecting with back-off when
// the connection drops; it returns early only for a refusal that will not
// change (the token refused: the pod is gone or the job ended).
func Run(ctx context.Context, cfg Config) error {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = 500*time.Millisecond, 30*time.Second, 0
	sessions := make(chan struct{}, cfg.MaxSessions)
	wait := func() bool {
		d := bo.NextBackOff()
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for {
		conn, err := dial(ctx, cfg)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			// A refusal while the token is there may be the endpoint's
			// file system failing for a while: only a token gone (the job
			// ended, the pod was deleted) ends the agent.
			if _, serr := os.Stat(cfg.TokenFile); errors.Is(serr, os.ErrNotExist) {
				return fmt.Errorf("the pod's agent token is gone: %w", err)
			}
			cfg.Logger.Warn("connect to the fetch endpoint", "err", err)
			if !wait() {
				return nil
			}
			continue
		}
		cfg.Logger.Info("connected to the fetch endpoint")
		began := time.Now()
		serveConn(ctx, cfg, conn, sessions)
		// A connection that lasted is a fresh start; one that ended at
		// once (another agent of the pod took its place) is retried
		// after the back-off, so that two never knock each other off in
		// a loop.
		if time.Since(began) > time.Minute {
			bo.Reset()
		}
		if !wait() {
			return nil
		}
	}
}

// serveConn accepts the hub's streams on conn until it closes or ctx ends.
func serveConn(ctx context.Context, cfg Config, conn net.Conn, sessions chan struct{}) {
	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = nil
	ycfg.Logger = slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)
	ycfg.AcceptBacklog = cfg.MaxSessions
	sess, err := yamux.Server(conn, ycfg)
	if err != nil {
		conn.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	defer sess.Close()
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return
		}
		select {
		case sessions <- struct{}{}:
			go func() {
				defer func() { <-sessions }()
				serveStream(ctx, cfg, st)
			}()
		default:
			go func() {
				tunnel.WriteJSON(st, tunnel.FrameExit, tunnel.Exit{Code: -1, Error: fmt.Sprintf("the pod's agent serves %d sessions at once; try again later", cfg.MaxSessions)})
				st.Close()
			}()
		}
	}
}

// dial connects to the endpoint and upgrades to the tunnel.
func dial(ctx context.Context, cfg Config) (net.Conn, error) {
	token, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("agent token: %w", err)
	}
	u, err := url.Parse(strings.TrimSuffix(cfg.URL, "/") + "/v1/agent/" +
		url.PathEscape(cfg.Namespace) + "/" + url.PathEscape(cfg.Name) + "/" + url.PathEscape(cfg.UID))
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(token))}}
	return tunnel.Dial(ctx, u, cfg.CAFile, hdr)
}
