package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

// LogOptions are kubectl logs' options, as the provider receives them.
type LogOptions struct {
	// Attempt is the container's restart count (0 first).
	Attempt int
	// TailLines < 0 means all lines; otherwise only the last TailLines.
	TailLines int64
	// LimitBytes <= 0 means no limit; otherwise the stream ends after
	// exactly that many bytes.
	LimitBytes int64
	// Follow keeps the stream open for new output until the container's
	// output is complete.
	Follow bool
	// Timestamps prefixes each line with the time it was written (RFC 3339
	// with nanoseconds, then a space), as the kubelet does; LimitBytes then
	// counts the prefixes too.
	Timestamps bool
	// Since, when set, starts at the first line written at or after it
	// (after TailLines, when both are set).
	Since time.Time
	// Terminated, when closed, says the container has ended even if it
	// never wrote its exit marker (a cancelled or killed job): the stream
	// then ends once a final read finds nothing new.
	Terminated <-chan struct{}
}

// Logs opens a container attempt's output. Errors the endpoint reports
// at once (unknown pod directory, bad token) are returned here; a Follow
// stream otherwise rides out endpoint outages, reconnecting with backoff
// and resuming at the next undelivered byte. Close, or cancelling ctx,
// ends it promptly.
func (c *Client) Logs(ctx context.Context, pod layout.Pod, container string, opts LogOptions) (io.ReadCloser, error) {
	if err := pod.Validate(); err != nil {
		return nil, err
	}
	if err := layout.ValidateContainer(container); err != nil {
		return nil, err
	}
	info, err := c.Look(ctx, pod, container, Query{Attempt: opts.Attempt, TailLines: opts.TailLines, Since: opts.Since})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &stream{
		c:      c,
		ctx:    ctx,
		cancel: cancel,
		path:   podPath(pod) + "/containers/" + url.PathEscape(container) + "/log",
		opts:   opts,
		left:   -1,
		bo:     newBackoff(c.cfg, 0),
	}
	if !opts.Follow {
		s.bo = newBackoff(c.cfg, c.cfg.RetryFor)
	}
	if info.TailOffset != nil {
		s.offset = *info.TailOffset
	}
	if info.SinceOffset != nil && *info.SinceOffset > s.offset {
		s.offset = *info.SinceOffset
	}
	if opts.LimitBytes > 0 {
		s.left = opts.LimitBytes
	}
	if opts.Timestamps {
		// The limit counts what the caller gets, prefixes included; every
		// start offset (0, a tail's, a since's) is a line start.
		s.stamped = &stamped{left: s.left, lineStart: true, buf: make([]byte, 256<<10)}
		s.left = -1
	}
	return s, nil
}

// stream reads a log by offset. It holds no buffer of its own: each Read
// copies from the current answer's body straight into the caller's slice,
// so its memory is the HTTP connection's, whatever the output's size.
type stream struct {
	c      *Client
	ctx    context.Context
	cancel context.CancelFunc
	path   string
	opts   LogOptions
	bo     backoff.BackOff

	offset int64 // next byte to fetch = bytes delivered so far + start
	left   int64 // bytes still allowed by LimitBytes; -1: no limit

	body     io.ReadCloser // the answer being read, nil between answers
	release  func()        // ends the current answer's request context
	next     int64         // where the current answer ends
	complete bool          // the current answer ends the output
	caughtUp bool          // the current answer reaches the file's size
	final    bool          // Terminated was seen: reads no longer wait

	// times are the current answer's records, when timestamps are asked.
	times   []logtime.Record
	stamped *stamped

	mu     sync.Mutex // guards closed against Close from another goroutine
	closed bool
	err    error // sticky terminal error (io.EOF at the end)
}

// Read implements io.Reader.
func (s *stream) Read(p []byte) (int, error) {
	if s.stamped == nil {
		return s.readRaw(p)
	}
	t := s.stamped
	if t.left >= 0 && int64(len(p)) > t.left {
		p = p[:t.left]
	}
	if len(p) == 0 {
		if t.left == 0 {
			return 0, io.EOF
		}
		return 0, nil
	}
	n := 0
	for n < len(p) {
		if len(t.prefix) > 0 {
			c := copy(p[n:], t.prefix)
			t.prefix, n = t.prefix[c:], n+c
			continue
		}
		if len(t.pend) == 0 {
			if n > 0 {
				break // deliver what there is rather than wait for more
			}
			m, err := s.readRaw(t.buf)
			if m == 0 {
				return 0, err
			}
			// The bytes came from the current answer: its records time them.
			t.pend, t.pendAt = t.buf[:m], s.offset-int64(m)
			if !sameRecords(t.times, s.times) {
				t.times, t.ti, t.cached = s.times, 0, nil
			}
			continue
		}
		// Whole lines while they fit: prefix, then up to the newline.
		for len(t.pend) > 0 && n < len(p) {
			if t.lineStart {
				pre := t.prefixAt(t.pendAt)
				t.lineStart = false
				if len(p)-n < len(pre) {
					t.prefix = append(t.prefix[:0], pre...)
					break
				}
				n += copy(p[n:], pre)
			}
			line := t.pend
			if i := bytes.IndexByte(line, '\n'); i >= 0 {
				line = line[:i+1]
			}
			c := copy(p[n:], line)
			t.lineStart = c == len(line) && line[c-1] == '\n'
			t.pend, t.pendAt, n = t.pend[c:], t.pendAt+int64(c), n+c
		}
	}
	if t.left > 0 {
		t.left -= int64(n)
		if t.left == 0 {
			s.finish(io.EOF)
		}
	}
	return n, nil
}

// readRaw reads the log's own bytes.
func (s *stream) readRaw(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if s.err != nil {
			return 0, s.err
		}
		if s.body == nil {
			if err := s.fetch(); err != nil {
				s.finish(err)
				continue
			}
		}
		if s.offset == s.next {
			// This answer is used up: end, or ask again.
			s.closeBody()
			if s.complete {
				s.finish(io.EOF)
			}
			continue
		}
		want := int64(len(p))
		if rem := s.next - s.offset; want > rem {
			want = rem
		}
		if s.left >= 0 && want > s.left {
			want = s.left
		}
		n, err := s.body.Read(p[:want])
		s.offset += int64(n)
		if s.left > 0 {
			s.left -= int64(n)
			if s.left == 0 {
				s.finish(io.EOF)
			}
		}
		if err != nil && s.offset < s.next {
			// Cut short (endpoint killed, network): resume from the last
			// byte delivered.
			s.closeBody()
			if n == 0 {
				if werr := s.wait(err); werr != nil {
					s.finish(werr)
				}
				continue
			}
		}
		if n > 0 {
			return n, nil
		}
	}
}

// fetch asks for the bytes from offset and leaves the answer in s.body. It
// returns io.EOF when the stream is over, another error when it cannot go
// on, and retries everything else.
func (s *stream) fetch() error {
	for {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		if s.left == 0 {
			return io.EOF
		}
		if !s.opts.Follow && s.caughtUp {
			return io.EOF // kubectl logs without -f: what exists now
		}
		if s.opts.Follow && !s.final && s.terminated() {
			s.final = true
		}
		q := url.Values{
			"attempt": {strconv.Itoa(s.opts.Attempt)},
			"offset":  {strconv.FormatInt(s.offset, 10)},
			"max":     {strconv.FormatInt(s.c.cfg.Chunk, 10)},
		}
		if s.stamped != nil {
			q.Set("times", "1")
		}
		waiting := s.opts.Follow && !s.final
		if waiting {
			q.Set("wait", s.c.cfg.Wait.String())
		}
		resp, err := s.request(q, waiting)
		if err != nil {
			if errors.Is(err, errTerminated) {
				s.final = true
				continue // the final read, at once
			}
			if permanent(err) || s.ctx.Err() != nil {
				return err
			}
			if werr := s.wait(err); werr != nil {
				return werr
			}
			continue
		}
		s.bo.Reset()
		h := resp.Header
		next, err1 := strconv.ParseInt(h.Get(fetch.HeaderNext), 10, 64)
		size, err2 := strconv.ParseInt(h.Get(fetch.HeaderSize), 10, 64)
		if err1 != nil || err2 != nil || next < s.offset {
			resp.Body.Close()
			s.release()
			return fmt.Errorf("fetch endpoint: bad answer headers (next %q, size %q)", h.Get(fetch.HeaderNext), h.Get(fetch.HeaderSize))
		}
		if s.stamped != nil && next > s.offset {
			if s.times, err = parseTimes(h.Get(fetch.HeaderTimes), s.offset, next); err != nil {
				resp.Body.Close()
				s.release()
				return err
			}
		}
		s.next = next
		s.complete = h.Get(fetch.HeaderComplete) == "true"
		s.caughtUp = next >= size
		if next > s.offset {
			s.body = resp.Body
			return nil
		}
		resp.Body.Close()
		s.release()
		switch {
		case s.complete:
			return io.EOF
		case s.final && s.opts.Follow:
			return io.EOF // ended without a marker, and nothing more came
		}
		// A long-poll that timed out, or a caught-up non-follow read
		// (handled at the top): ask again.
	}
}

var errTerminated = errors.New("container terminated")

// request sends one read and returns the answer with its body unread. A
// waiting read is cut short when Terminated closes, so the final read
// happens at once. The request's context lives until closeBody.
func (s *stream) request(q url.Values, waiting bool) (*http.Response, error) {
	rctx, rcancel := context.WithCancelCause(s.ctx)
	stopWatch := func() {}
	if waiting && s.opts.Terminated != nil {
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			select {
			case <-s.opts.Terminated:
				rcancel(errTerminated)
			case <-stop:
			}
		}()
		stopWatch = func() { close(stop); <-done }
	}
	rc := s.c.rc
	if !s.opts.Follow {
		rc = s.c.bulk
	}
	resp, err := s.c.do(rctx, rc, http.MethodGet, s.path, q, nil, true)
	stopWatch()
	cut := errors.Is(context.Cause(rctx), errTerminated)
	if err != nil {
		rcancel(nil)
		if cut {
			return nil, errTerminated
		}
		return nil, err
	}
	raw := resp.RawResponse
	if raw.StatusCode != http.StatusOK || cut {
		body, _ := io.ReadAll(io.LimitReader(raw.Body, 64<<10))
		raw.Body.Close()
		rcancel(nil)
		if cut {
			return nil, errTerminated
		}
		return nil, httpError(raw.StatusCode, body)
	}
	s.release = func() { rcancel(nil) }
	return raw, nil
}

func (s *stream) terminated() bool {
	if s.opts.Terminated == nil {
		return false
	}
	select {
	case <-s.opts.Terminated:
		return true
	default:
		return false
	}
}

// wait sleeps the next backoff delay after a failure.
func (s *stream) wait(cause error) error {
	d := s.bo.NextBackOff()
	if d == backoff.Stop {
		return fmt.Errorf("fetch endpoint unreachable: %w", cause)
	}
	return sleep(s.ctx, d)
}

func (s *stream) closeBody() {
	if s.body != nil {
		s.body.Close()
		s.body = nil
		s.release()
	}
}

func (s *stream) finish(err error) {
	s.err = err
	s.closeBody()
}

// Close implements io.Closer. It may be called from another goroutine while
// a Read is blocked: it cancels the stream's context, which aborts the
// request or body read in flight.
func (s *stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.cancel()
	}
	return nil
}

// newBackoff is the reconnect schedule; maxElapsed 0 retries until the
// context ends (follow streams).
func newBackoff(cfg Config, maxElapsed time.Duration) backoff.BackOff {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = cfg.InitialBackoff
	bo.MaxInterval = cfg.MaxBackoff
	bo.MaxElapsedTime = maxElapsed
	bo.Reset()
	return bo
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
