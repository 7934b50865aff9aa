package slurmclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/slurmkube/slurm-vk/internal/tokenfile"
)

// authTransport adds slurmrestd's authentication headers, bounds the number
// of requests in flight, and after a 401/511 re-reads the token and tries
// once more if it changed.
type authTransport struct {
	base   http.RoundTripper
	user   string
	tokens *tokenfile.File
	slots  chan struct{}
}

func (a *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	select {
	case a.slots <- struct{}{}:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	resp, err := a.roundTrip(req)
	if err != nil {
		<-a.slots
		return nil, err
	}
	resp.Body = &releaseOnClose{ReadCloser: resp.Body, release: func() { <-a.slots }}
	return resp, nil
}

func (a *authTransport) roundTrip(req *http.Request) (*http.Response, error) {
	token, err := a.tokens.Get(false)
	if err != nil {
		return nil, err
	}
	resp, err := a.send(req, token)
	if err != nil || !rejectsToken(resp.StatusCode) {
		return resp, err
	}
	fresh, err := a.tokens.Get(true)
	if err != nil || fresh == token || (req.Body != nil && req.GetBody == nil) {
		return resp, nil // nothing better to try: report the rejection
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if req.GetBody != nil {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		req = req.Clone(req.Context())
		req.Body = body
	}
	return a.send(req, fresh)
}

func (a *authTransport) send(req *http.Request, token string) (*http.Response, error) {
	r := req.Clone(req.Context())
	if a.user != "" {
		r.Header.Set("X-SLURM-USER-NAME", a.user)
	}
	r.Header.Set("X-SLURM-USER-TOKEN", token)
	return a.base.RoundTrip(r)
}

func rejectsToken(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusNetworkAuthenticationRequired
}

type releaseOnClose struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (r *releaseOnClose) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// newHTTPClient builds the HTTP client for cfg and returns it with the base
// URL requests should use (for unix sockets, a placeholder host).
func newHTTPClient(cfg Config) (*http.Client, string, error) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          cfg.MaxConcurrent,
		MaxIdleConnsPerHost:   cfg.MaxConcurrent,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	base := strings.TrimSuffix(cfg.URL, "/")
	switch {
	case strings.HasPrefix(base, "unix:"):
		sock := strings.TrimPrefix(strings.TrimPrefix(base, "unix:"), "//")
		if sock == "" {
			return nil, "", fmt.Errorf("slurmrestd URL %q: no socket path", cfg.URL)
		}
		tr.Proxy = nil
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
		base = "http://slurmrestd"
	case strings.HasPrefix(base, "https://"):
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.CAFile != "" {
			pem, err := os.ReadFile(cfg.CAFile)
			if err != nil {
				return nil, "", fmt.Errorf("slurmrestd CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, "", fmt.Errorf("slurmrestd CA file %s: no PEM certificates", cfg.CAFile)
			}
			tlsCfg.RootCAs = pool
		}
		tr.TLSClientConfig = tlsCfg
	case strings.HasPrefix(base, "http://"):
	default:
		return nil, "", fmt.Errorf("slurmrestd URL %q: want http://, https:// or unix:/path", cfg.URL)
	}
	var rt http.RoundTripper = &authTransport{
		base:   tr,
		user:   cfg.User,
		tokens: tokenfile.New(cfg.TokenFile),
		slots:  make(chan struct{}, cfg.MaxConcurrent),
	}
	if cfg.WrapTransport != nil {
		rt = cfg.WrapTransport(rt)
	}
	return &http.Client{Transport: rt, Timeout: cfg.Timeout}, base, nil
}
