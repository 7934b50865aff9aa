package slurmclient

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sys/unix"

	"github.com/slurmkube/slurm-vk/slurmclient/model"
)

// The neutral model, re-exported so the provider needs only this package.
type (
	JobID      = model.JobID
	JobSpec    = model.JobSpec
	Job        = model.Job
	JobState   = model.JobState
	JobStatus  = model.JobStatus
	JobFilter  = model.JobFilter
	ExitCode   = model.ExitCode
	Node       = model.Node
	Partition  = model.Partition
	ServerInfo = model.ServerInfo
	Error      = model.Error
	SlurmError = model.SlurmError
)

// Job states.
const (
	StatePending     = model.StatePending
	StateRunning     = model.StateRunning
	StateSuspended   = model.StateSuspended
	StateCompleted   = model.StateCompleted
	StateCancelled   = model.StateCancelled
	StateFailed      = model.StateFailed
	StateTimeout     = model.StateTimeout
	StateNodeFail    = model.StateNodeFail
	StatePreempted   = model.StatePreempted
	StateBootFail    = model.StateBootFail
	StateDeadline    = model.StateDeadline
	StateOutOfMemory = model.StateOutOfMemory
)

// Error kinds, for errors.Is.
var (
	ErrNotFound        = model.ErrNotFound
	ErrUnauthenticated = model.ErrUnauthenticated
	ErrForbidden       = model.ErrForbidden
	ErrRejected        = model.ErrRejected
	ErrUnavailable     = model.ErrUnavailable
	ErrOutcomeUnknown  = model.ErrOutcomeUnknown
)

// Interface is what the provider uses, and no more; *Client implements it
// (and more: Partitions, APIVersion), and tests use fakes.
type Interface interface {
	// Ping makes an authenticated call and reports the server's versions.
	Ping(ctx context.Context) (ServerInfo, error)
	// Submit submits a batch job, once: it is never repeated. A request
	// whose outcome is unknown (the job may exist) fails with an error that
	// is both ErrUnavailable and ErrOutcomeUnknown; the caller looks for
	// the job by its comment before it submits again.
	Submit(ctx context.Context, spec JobSpec) (JobID, error)
	Job(ctx context.Context, id JobID) (*Job, error)
	// JobStates asks for many jobs' states in one request; IDs slurmctld
	// no longer knows are missing from the answer.
	JobStates(ctx context.Context, ids []JobID) ([]JobStatus, error)
	Jobs(ctx context.Context, f JobFilter) ([]Job, error)
	// Cancel cancels a job the way scancel does: a pending job never
	// starts; a running one gets SIGTERM, then SIGKILL after Slurm's
	// KillWait, and ends CANCELLED. A job that has already ended is not an
	// error; ErrNotFound means Slurm does not know the job (any more).
	Cancel(ctx context.Context, id JobID) error
	// Signal only delivers sig to a running job's processes; the job ends
	// however they react (a trapped SIGTERM and exit 143 ends it FAILED).
	Signal(ctx context.Context, id JobID, sig syscall.Signal) error
	// Nodes lists the cluster's nodes, for the virtual node's capacity.
	Nodes(ctx context.Context) ([]Node, error)
}

// Config says how to reach slurmrestd.
type Config struct {
	// URL is http://host:port, https://host:port or unix:/path/to/socket.
	URL string
	// User goes in X-SLURM-USER-NAME; empty leaves it out (the token's own
	// user is used).
	User string
	// TokenFile holds the JWT; it is re-read when it changes.
	TokenFile string
	// APIVersion forces a version (e.g. "v0.0.42"); "" or "auto" picks the
	// newest one both sides speak.
	APIVersion string
	// CAFile verifies an https slurmrestd.
	CAFile string
	// Timeout bounds one HTTP request (default 30s).
	Timeout time.Duration
	// MaxConcurrent bounds requests in flight (default 16).
	MaxConcurrent int
	// MaxIDsPerRequest bounds the job IDs of one /jobs/state request
	// (default 2000: 32 KiB of query at most; behind a proxy with an
	// 8 KiB request-line limit, use 400).
	MaxIDsPerRequest int
	// RetryFor bounds retries of a failed read, or of a cancel or signal
	// (default 30s; the caller's context bounds them too).
	RetryFor time.Duration
	// Observe, if set, is told of every call of Interface once it ends:
	// its operation ("submit", "job_states"...), how long it took with
	// its retries, and its error. For metrics; it must not block.
	Observe func(op string, elapsed time.Duration, err error)
	// WrapTransport, if set, wraps the transport every HTTP request goes
	// through (as client-go's rest.Config does): to count or trace the
	// requests themselves, where Observe sees calls.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Client is the slurmrestd client. The API version is negotiated on first
// use, so a Client can be made while slurmrestd is down.
type Client struct {
	cfg  Config
	http *http.Client
	base string

	mu      sync.Mutex
	backend model.Backend
}

var _ Interface = (*Client)(nil)

// New checks cfg and builds a Client; it does no I/O.
func New(cfg Config) (*Client, error) {
	if cfg.URL == "" || cfg.TokenFile == "" {
		return nil, errors.New("slurmclient: URL and TokenFile are required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.MaxIDsPerRequest <= 0 {
		cfg.MaxIDsPerRequest = 2000
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 16
	}
	if cfg.RetryFor <= 0 {
		cfg.RetryFor = 30 * time.Second
	}
	if cfg.APIVersion == "auto" {
		cfg.APIVersion = ""
	}
	if v := cfg.APIVersion; v != "" && factory(v) == nil {
		return nil, fmt.Errorf("slurmclient: API version %s is not supported (supported: %s)", v, strings.Join(SupportedVersions(), ", "))
	}
	hc, base, err := newHTTPClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("slurmclient: %w", err)
	}
	return &Client{cfg: cfg, http: hc, base: base}, nil
}

// observe reports a call to Config.Observe; deferred with the call's
// start and its error result.
func (c *Client) observe(op string, start time.Time, err *error) {
	if c.cfg.Observe != nil {
		c.cfg.Observe(op, time.Since(start), *err)
	}
}

// retry runs op until it succeeds, fails for a reason other than
// ErrUnavailable, or the retry budget or ctx runs out.
func (c *Client) retry(ctx context.Context, op func(model.Backend) error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = 5 * time.Second
	bo.MaxElapsedTime = c.cfg.RetryFor
	return backoff.Retry(func() error {
		b, err := c.backendFor(ctx)
		if err == nil {
			err = op(b)
		}
		if err != nil && !errors.Is(err, ErrUnavailable) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(bo, ctx))
}

// Ping implements Interface.
func (c *Client) Ping(ctx context.Context) (info ServerInfo, err error) {
	defer c.observe("ping", time.Now(), &err)
	err = c.retry(ctx, func(b model.Backend) (err error) {
		info, err = b.Ping(ctx)
		return err
	})
	return info, err
}

// Job implements Interface.
func (c *Client) Job(ctx context.Context, id JobID) (job *Job, err error) {
	defer c.observe("job", time.Now(), &err)
	err = c.retry(ctx, func(b model.Backend) (err error) {
		job, err = b.Job(ctx, id)
		return err
	})
	if job != nil {
		expandPaths(job)
	}
	return job, err
}

// JobStates implements Interface.
// IDs go in the query string, and slurmrestd (24.11 and 26.05 alike)
// drops a request whose head passes about 80 KiB: 5,434 seven-digit IDs
// (measured; the note on issue #13). JobStates asks for at most
// MaxIDsPerRequest at a time.
func (c *Client) JobStates(ctx context.Context, ids []JobID) (out []JobStatus, err error) {
	defer c.observe("job_states", time.Now(), &err)
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), c.cfg.MaxIDsPerRequest)]
		ids = ids[len(chunk):]
		var part []JobStatus
		err = c.retry(ctx, func(b model.Backend) (err error) {
			part, err = b.JobStates(ctx, chunk)
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	return out, nil
}

// Jobs implements Interface.
func (c *Client) Jobs(ctx context.Context, f JobFilter) (out []Job, err error) {
	defer c.observe("jobs", time.Now(), &err)
	err = c.retry(ctx, func(b model.Backend) (err error) {
		out, err = b.Jobs(ctx, f)
		return err
	})
	for i := range out {
		expandPaths(&out[i])
	}
	return out, err
}

// Nodes implements Interface.
func (c *Client) Nodes(ctx context.Context) (out []Node, err error) {
	defer c.observe("nodes", time.Now(), &err)
	err = c.retry(ctx, func(b model.Backend) (err error) {
		out, err = b.Nodes(ctx)
		return err
	})
	return out, err
}

// Partitions implements Interface.
func (c *Client) Partitions(ctx context.Context) (out []Partition, err error) {
	defer c.observe("partitions", time.Now(), &err)
	err = c.retry(ctx, func(b model.Backend) (err error) {
		out, err = b.Partitions(ctx)
		return err
	})
	return out, err
}

// Cancel implements Interface. Cancelling twice is harmless, so it retries
// like a read.
func (c *Client) Cancel(ctx context.Context, id JobID) (err error) {
	defer c.observe("cancel", time.Now(), &err)
	err = c.retry(ctx, func(b model.Backend) error { return b.Cancel(ctx, id, "") })
	var se *Error
	if errors.As(err, &se) && se.HasErrno(model.ErrnoAlreadyDone) {
		return nil
	}
	return err
}

// Signal implements Interface.
func (c *Client) Signal(ctx context.Context, id JobID, sig syscall.Signal) (err error) {
	defer c.observe("signal", time.Now(), &err)
	name := unix.SignalName(sig)
	if name == "" || sig == 0 {
		return &model.Error{Kind: model.ErrRejected, Op: fmt.Sprintf("signal job %d", id), Err: fmt.Errorf("unknown signal %d", sig)}
	}
	return c.retry(ctx, func(b model.Backend) error { return b.Cancel(ctx, id, name) })
}
