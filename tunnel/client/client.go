// Package client is the provider's side of the tunnel: it asks the fetch
// endpoint for a session on a pod's agent and runs an exec over it.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// Config says how to reach the fetch endpoint.
type Config struct {
	URL       string
	TokenFile string
	CAFile    string
}

// Client opens tunnel sessions.
type Client struct{ cfg Config }

// New makes a Client; it does no I/O.
func New(cfg Config) *Client { return &Client{cfg: cfg} }

// ErrNoAgent: the pod's agent is not connected (its job is not running,
// or its agent cannot reach the fetch endpoint).
var ErrNoAgent = errors.New("no agent connected for the pod")

// open asks the endpoint for a session on the pod's agent and sends req.
func (c *Client) open(ctx context.Context, ns, name, uid string, req tunnel.Request) (net.Conn, error) {
	token, err := os.ReadFile(c.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("fetch token: %w", err)
	}
	u, err := url.Parse(strings.TrimSuffix(c.cfg.URL, "/") + "/v1/pods/" +
		url.PathEscape(ns) + "/" + url.PathEscape(name) + "/" + url.PathEscape(uid) + "/tunnel")
	if err != nil {
		return nil, err
	}
	conn, err := tunnel.Dial(ctx, u, c.cfg.CAFile, http.Header{"Authorization": {"Bearer " + strings.TrimSpace(string(token))}})
	var refused *tunnel.RefusedError
	if errors.As(err, &refused) && refused.Status == http.StatusServiceUnavailable {
		return nil, fmt.Errorf("%w: %s", ErrNoAgent, refused.Body)
	}
	if err != nil {
		return nil, err
	}
	if err := tunnel.WriteJSON(conn, tunnel.FrameRequest, req); err != nil {
		conn.Close()
		if errors.Is(err, tunnel.ErrFrameTooLarge) {
			return nil, fmt.Errorf("the command is longer than %d KiB: pass a long script on stdin (kubectl exec -i ... -- sh < script)", tunnel.MaxFrame>>10)
		}
		return nil, err
	}
	return conn, nil
}

// PortForward carries one connection to port on the pod's job node: what
// is read from stream goes there, what comes back is written to stream,
// until both directions end (stream's end is sent as a half-close; the
// job's half-close reaches stream if it has CloseWrite). An error says
// why the connection could not be made or broke.
func (c *Client) PortForward(ctx context.Context, ns, name, uid string, port int, stream io.ReadWriter) error {
	conn, err := c.open(ctx, ns, name, uid, tunnel.Request{Kind: "port-forward", Port: port})
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var mu sync.Mutex
	go func() {
		io.Copy(&tunnel.FrameWriter{W: conn, Typ: tunnel.FrameData, Mu: &mu}, stream)
		mu.Lock()
		tunnel.WriteFrame(conn, tunnel.FrameCloseWrite, nil)
		mu.Unlock()
	}()
	var buf []byte
	for {
		typ, p, err := tunnel.ReadFrame(conn, buf)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("the port-forward session ended early: %w", err)
		}
		buf = p[:0]
		switch typ {
		case tunnel.FrameData:
			if _, err := stream.Write(p); err != nil {
				return err
			}
		case tunnel.FrameCloseWrite:
			if cw, ok := stream.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
		case tunnel.FrameExit:
			var exit tunnel.Exit
			if err := json.Unmarshal(p, &exit); err != nil {
				return fmt.Errorf("the agent's exit frame: %w", err)
			}
			if exit.Error != "" {
				return errors.New(exit.Error)
			}
			return nil
		}
	}
}

// Streams are a session's ends on the provider's side; nil ones are not
// used. Resize delivers a terminal's new sizes (TTY sessions).
type Streams struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Resize         <-chan tunnel.TermSize
}

// Exec runs req (Kind "exec") in the pod and returns how it ended. An
// error means the session could not run or broke; a command that could
// not start in the container is an Exit with Code -1 and its Error.
func (c *Client) Exec(ctx context.Context, ns, name, uid string, req tunnel.Request, s Streams) (tunnel.Exit, error) {
	conn, err := c.open(ctx, ns, name, uid, req)
	if err != nil {
		return tunnel.Exit{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var mu sync.Mutex
	if s.Stdin != nil && req.Stdin {
		go func() {
			io.Copy(&tunnel.FrameWriter{W: conn, Typ: tunnel.FrameStdin, Mu: &mu}, s.Stdin)
			mu.Lock()
			tunnel.WriteFrame(conn, tunnel.FrameCloseStdin, nil)
			mu.Unlock()
		}()
	}
	if s.Resize != nil {
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case ts, ok := <-s.Resize:
					if !ok {
						return
					}
					mu.Lock()
					err := tunnel.WriteJSON(conn, tunnel.FrameResize, ts)
					mu.Unlock()
					if err != nil {
						return
					}
				}
			}
		}()
	}
	var buf []byte
	for {
		typ, p, err := tunnel.ReadFrame(conn, buf)
		if err != nil {
			if ctx.Err() != nil {
				return tunnel.Exit{}, ctx.Err()
			}
			return tunnel.Exit{}, fmt.Errorf("the session ended before the command did: %w", err)
		}
		buf = p[:0]
		switch typ {
		case tunnel.FrameStdout:
			if s.Stdout != nil {
				s.Stdout.Write(p)
			}
		case tunnel.FrameStderr:
			if s.Stderr != nil {
				s.Stderr.Write(p)
			}
		case tunnel.FrameExit:
			var exit tunnel.Exit
			if err := json.Unmarshal(p, &exit); err != nil {
				return tunnel.Exit{}, fmt.Errorf("the agent's exit frame: %w", err)
			}
			return exit, nil
		}
	}
}
