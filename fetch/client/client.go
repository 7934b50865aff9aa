// Package client is the provider's side of the fetch protocol
// (fetch/README.md): it reads container output by byte offset, follows it
// with long-polls that survive endpoint restarts without losing or
// repeating a byte, and stages files into pod directories.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-resty/resty/v2"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/internal/tokenfile"
)

var (
	// ErrNotFound: the pod directory (or what was asked for in it) does not
	// exist.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the endpoint refused the token (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrForbidden: the token may not reach the pod, or what was asked for
	// is not a plain file in the pod directory (403).
	ErrForbidden = errors.New("forbidden")
	// ErrRejected: the endpoint refused the request as malformed or too big.
	ErrRejected = errors.New("rejected")
	// ErrNoSpace: the shared file system (or its quota) is full (507).
	// Not retried within a call: room comes back when someone deletes
	// files, not in seconds; the caller's own retry (the provider's sync
	// loop) tries again later.
	ErrNoSpace = errors.New("no space")
)

// Error is a failed request, with the endpoint's reason.
type Error struct {
	Kind   error // ErrNotFound, ErrUnauthorized, ErrForbidden, ErrRejected, ErrNoSpace, or nil (server/transport)
	Status int
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("fetch endpoint: HTTP %d: %s", e.Status, e.Reason)
}

// Is makes errors.Is(err, ErrNotFound) work.
func (e *Error) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// Config configures a Client.
type Config struct {
	// URL is the endpoint's base URL, http:// or https://.
	URL string
	// TokenFile holds the bearer token; re-read when it changes.
	TokenFile string
	// CAFile verifies an https endpoint.
	CAFile string
	// InitialBackoff and MaxBackoff bound the reconnect delays of a stream
	// (defaults 100ms and 5s); the delay resets after each success.
	InitialBackoff, MaxBackoff time.Duration
	// Wait is the long-poll wait sent with follow reads (default 30s).
	Wait time.Duration
	// Chunk is the most a single read request asks for (default 4 MiB).
	// The client streams the answer, so it bounds no memory.
	Chunk int64
	// RetryFor bounds retries of calls that are not follow streams
	// (default 30s).
	RetryFor time.Duration
	// HTTP1 disables HTTP/2. By default follow streams and calls use
	// HTTP/2 (h2c on plain http, which slurm-fetchd serves), so that many
	// streams share a few connections; set HTTP1 behind a proxy that only
	// speaks HTTP/1.1.
	HTTP1 bool
}

// Client talks to one fetch endpoint.
type Client struct {
	cfg   Config
	rc    *resty.Client // HTTP/2: follow streams and calls
	bulk  *resty.Client // HTTP/1.1: one-shot reads
	token *tokenfile.File
}

// New checks cfg and builds a Client; it does no I/O.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("fetch endpoint URL %q: want http(s)://host:port", cfg.URL)
	}
	if cfg.TokenFile == "" {
		return nil, errors.New("fetch endpoint: a token file is required")
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Wait <= 0 {
		cfg.Wait = 30 * time.Second
	}
	if cfg.Chunk <= 0 {
		cfg.Chunk = 4 << 20
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 30 * time.Second
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("fetch endpoint CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("fetch endpoint CA file %s: no PEM certificates", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	transport := func(protocols func(*http.Protocols)) *http.Transport {
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
			TLSClientConfig:     tlsCfg.Clone(),
			Protocols:           new(http.Protocols),
		}
		protocols(tr.Protocols)
		return tr
	}
	// Follow streams and small calls: HTTP/2 (h2c on plain http, which
	// slurm-fetchd serves), so that a thousand idle `logs -f` share a few
	// connections. One-shot reads: HTTP/1.1, whose server side sends the
	// file with sendfile, about four times HTTP/2's bulk throughput here.
	multiplexed := transport(func(p *http.Protocols) {
		switch {
		case cfg.HTTP1:
			p.SetHTTP1(true)
		case u.Scheme == "http":
			p.SetUnencryptedHTTP2(true)
		default:
			p.SetHTTP2(true)
			p.SetHTTP1(true)
		}
	})
	bulk := transport(func(p *http.Protocols) { p.SetHTTP1(true) })
	// No client-wide timeout: it would cut long-polls and streams. Calls
	// are bounded by their contexts.
	newResty := func(tr *http.Transport) *resty.Client {
		return resty.NewWithClient(&http.Client{Transport: tr}).
			SetBaseURL(strings.TrimSuffix(cfg.URL, "/")).
			SetLogger(quietLogger{})
	}
	return &Client{cfg: cfg, rc: newResty(multiplexed), bulk: newResty(bulk), token: tokenfile.New(cfg.TokenFile)}, nil
}

// quietLogger keeps resty from printing to stderr; errors reach callers.
type quietLogger struct{}

func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Warnf(string, ...any)  {}
func (quietLogger) Debugf(string, ...any) {}

func podPath(pod layout.Pod) string {
	return "/v1/pods/" + url.PathEscape(pod.Namespace) + "/" + url.PathEscape(pod.Name) + "/" + url.PathEscape(pod.UID)
}

// do sends one request with the bearer token; after a 401 it re-reads the
// token file and tries once more if the token changed. With stream set the
// body is left unread for the caller.
func (c *Client) do(ctx context.Context, rc *resty.Client, method, path string, query url.Values, body []byte, stream bool) (*resty.Response, error) {
	send := func(force bool) (*resty.Response, string, error) {
		tok, err := c.token.Get(force)
		if err != nil {
			return nil, "", err
		}
		req := rc.R().SetContext(ctx).SetAuthToken(tok).SetDoNotParseResponse(stream)
		if query != nil {
			req.SetQueryParamsFromValues(query)
		}
		if body != nil {
			req.SetBody(body).SetHeader("Content-Type", "application/octet-stream")
		}
		resp, err := req.Execute(method, path)
		return resp, tok, err
	}
	resp, tok, err := send(false)
	if err != nil || resp.StatusCode() != http.StatusUnauthorized {
		return resp, err
	}
	if fresh, ferr := c.token.Get(true); ferr != nil || fresh == tok {
		return resp, nil
	}
	closeRaw(resp)
	resp, _, err = send(true)
	return resp, err
}

func closeRaw(resp *resty.Response) {
	if resp != nil && resp.RawBody() != nil {
		io.Copy(io.Discard, io.LimitReader(resp.RawBody(), 64<<10))
		resp.RawBody().Close()
	}
}

// httpError turns a non-2xx answer into an *Error. body is the answer's
// body when the caller has it.
func httpError(status int, body []byte) error {
	var eb struct {
		Error string `json:"error"`
	}
	reason := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &eb) == nil && eb.Error != "" {
		reason = eb.Error
	}
	if reason == "" {
		reason = http.StatusText(status)
	}
	e := &Error{Status: status, Reason: reason}
	switch {
	case status == http.StatusNotFound:
		e.Kind = ErrNotFound
	case status == http.StatusUnauthorized:
		e.Kind = ErrUnauthorized
	case status == http.StatusForbidden:
		e.Kind = ErrForbidden
	case status == http.StatusInsufficientStorage:
		e.Kind = ErrNoSpace
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests:
	case status >= 400 && status < 500:
		e.Kind = ErrRejected
	}
	return e
}

// permanent tells whether retrying the same request cannot help: the
// endpoint refused it, or its certificate does not verify against the
// client's roots (which do not change while it runs).
func permanent(err error) bool {
	var e *Error
	var verify *tls.CertificateVerificationError
	var host x509.HostnameError
	return errors.As(err, &e) && e.Kind != nil || errors.As(err, &verify) || errors.As(err, &host)
}

// call makes a small request, retrying transient failures with backoff for
// up to RetryFor, and returns the body of a 2xx answer.
func (c *Client) call(ctx context.Context, method, path string, query url.Values, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RetryFor)
	defer cancel()
	bo := newBackoff(c.cfg, 0) // bounded by ctx
	var last error
	for {
		resp, err := c.do(ctx, c.rc, method, path, query, body, false)
		if err != nil && ctx.Err() != nil && last != nil {
			// The deadline cut a retry short: the endpoint's last answer
			// says more than "context deadline exceeded".
			return nil, fmt.Errorf("%s %s: %w (last error: %w)", method, path, ctx.Err(), last)
		}
		if err == nil {
			if resp.IsSuccess() {
				return resp.Body(), nil
			}
			err = httpError(resp.StatusCode(), resp.Body())
		}
		if permanent(err) {
			return nil, err
		}
		last = err
		if werr := sleep(ctx, bo.NextBackOff()); werr != nil {
			return nil, fmt.Errorf("%s %s: %w (last error: %w)", method, path, werr, err)
		}
	}
}

// CreatePod makes the pod directory, owned by user and closed to others;
// "" leaves the owner to the endpoint (its single configured owner).
// Idempotent; a directory that exists for another user is refused.
func (c *Client) CreatePod(ctx context.Context, pod layout.Pod, user string) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	_, err := c.call(ctx, http.MethodPut, podPath(pod), q, nil)
	return err
}

// DeletePod removes the pod directory, after the endpoint's retention
// (idempotent).
func (c *Client) DeletePod(ctx context.Context, pod layout.Pod) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	_, err := c.call(ctx, http.MethodDelete, podPath(pod), nil, nil)
	return err
}

// Unstage removes the pod's staged files (idempotent); its output stays.
func (c *Client) Unstage(ctx context.Context, pod layout.Pod) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	_, err := c.call(ctx, http.MethodDelete, podPath(pod)+"/files", nil, nil)
	return err
}

// Stage writes data to the pod's staging directory at rel with mode,
// atomically (readers never see a partial file); with os.ModeDir in mode
// it makes the directory rel instead (data unused).
func (c *Client) Stage(ctx context.Context, pod layout.Pod, rel string, data []byte, mode os.FileMode) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	if err := layout.ValidateStaged(rel); err != nil {
		return err
	}
	q := url.Values{"mode": {fmt.Sprintf("%04o", mode.Perm())}}
	if mode.IsDir() {
		q, data = url.Values{"dir": {"1"}}, nil
	}
	if data == nil {
		data = []byte{}
	}
	_, err := c.call(ctx, http.MethodPut, podPath(pod)+"/files/"+stagedPath(rel), q, data)
	return err
}

// UnstageFile removes one staged file, rel as for Stage (idempotent).
func (c *Client) UnstageFile(ctx context.Context, pod layout.Pod, rel string) error {
	if err := pod.Validate(); err != nil {
		return err
	}
	if err := layout.ValidateStaged(rel); err != nil {
		return err
	}
	_, err := c.call(ctx, http.MethodDelete, podPath(pod)+"/files/"+stagedPath(rel), nil, nil)
	return err
}

// stagedPath is rel in a URL: each segment escaped.
func stagedPath(rel string) string {
	segs := strings.Split(rel, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}

// Info is a stream's state, as the endpoint reports it.
type Info = fetch.Info

// Info reports a container attempt's output size and exit state; with
// tailLines >= 0 also where its last tailLines lines start.
func (c *Client) Info(ctx context.Context, pod layout.Pod, container string, attempt int, tailLines int64) (Info, error) {
	return c.Look(ctx, pod, container, Query{Attempt: attempt, TailLines: tailLines})
}

// Query names a container attempt and the offsets to find in its output.
type Query struct {
	// Attempt is the attempt; Latest asks for the latest one instead.
	Attempt int
	Latest  bool
	// TailLines >= 0 asks where the last TailLines lines start.
	TailLines int64
	// Since, when set, asks where the first line written at or after it
	// starts.
	Since time.Time
}

// Look reports a container attempt's output size, exit state and the
// offsets q asks for.
func (c *Client) Look(ctx context.Context, pod layout.Pod, container string, q Query) (Info, error) {
	v := url.Values{"attempt": {strconv.Itoa(q.Attempt)}}
	if q.Latest {
		v.Set("attempt", "latest")
	}
	if q.TailLines >= 0 {
		v.Set("tail_lines", strconv.FormatInt(q.TailLines, 10))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	body, err := c.call(ctx, http.MethodGet, podPath(pod)+"/containers/"+url.PathEscape(container)+"/info", v, nil)
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(body, &info); err != nil {
		return Info{}, fmt.Errorf("fetch endpoint: decode info: %w", err)
	}
	return info, nil
}

// Container is a container's latest attempt and the one before.
type Container = fetch.Container

// Containers reports the latest attempt (and the one before) of each named
// container of a pod, in one request.
// (The endpoint takes at most maxContainers names a request.)
func (c *Client) Containers(ctx context.Context, pod layout.Pod, names []string) (map[string]Container, error) {
	const maxContainers = 128
	out := map[string]Container{}
	for len(names) > 0 {
		batch := names[:min(len(names), maxContainers)]
		names = names[len(batch):]
		body, err := c.call(ctx, http.MethodGet, podPath(pod)+"/containers", url.Values{"name": batch}, nil)
		if err != nil {
			return nil, err
		}
		var part map[string]Container
		if err := json.Unmarshal(body, &part); err != nil {
			return nil, fmt.Errorf("fetch endpoint: decode containers: %w", err)
		}
		for k, v := range part {
			out[k] = v
		}
	}
	return out, nil
}

// CloseIdleConnections releases idle keep-alive connections.
func (c *Client) CloseIdleConnections() {
	c.rc.GetClient().CloseIdleConnections()
	c.bulk.GetClient().CloseIdleConnections()
}
