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
	for {
		conn, err := dial(ctx, cfg)
		var refused *refusedError
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &refused) && refused.permanent():
			return err
		case err != nil:
			wait := bo.NextBackOff()
			cfg.Logger.Warn("connect to the fetch endpoint", "err", err, "retry", wait)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			continue
		}
		bo.Reset()
		cfg.Logger.Info("connected to the fetch endpoint")
		serveConn(ctx, cfg, conn, sessions)
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

// refusedError is the endpoint's answer to a connect other than 101.
type refusedError struct {
	status int
	body   string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("the fetch endpoint refused the agent: %d %s", e.status, e.body)
}

// permanent: the token or the pod is refused, which retrying will not
// change (the job ended: its staged files, the token, are gone).
func (e *refusedError) permanent() bool {
	return e.status == http.StatusUnauthorized || e.status == http.StatusForbidden || e.status == http.StatusNotFound
}

// dial connects to the endpoint and upgrades to the tunnel.
func dial(ctx context.Context, cfg Config) (net.Conn, error) {
	token, err := os.ReadFile(cfg.TokenFile)
	if err != nil {
		return nil, &refusedError{status: http.StatusUnauthorized, body: "agent token: " + err.Error()}
	}
	u, err := url.Parse(strings.TrimSuffix(cfg.URL, "/") + "/v1/agent/" +
		url.PathEscape(cfg.Namespace) + "/" + url.PathEscape(cfg.Name) + "/" + url.PathEscape(cfg.UID))
	if err != nil {
		return nil, err
	}
	hdr := http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(token))}}
	conn, err := tunnel.Dial(ctx, u, cfg.CAFile, hdr)
	var refused *tunnel.RefusedError
	if errors.As(err, &refused) {
		return nil, &refusedError{status: refused.Status, body: refused.Body}
	}
	return conn, err
}
