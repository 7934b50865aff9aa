package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

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
	// ready and started: the attempt's readiness and startup probes
	// passed (the agent's files).
	ready, started, postStarted bool
	// reason and message, when the job script gave them (a pull failure).
	reason, message string
}

// maxMarker bounds what is read of an exit marker: the code, a reason
// and a runtime's message.
const maxMarker = 8192

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
	if err == nil {
		err = ownFile(pr, name, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// errNotOwn is a log or marker that is not the job's own file: a hard link
// (the job can link a file it cannot read into its directory, where
// fs.protected_hardlinks is off, and the endpoint runs as root) or a file
// of another user.
var errNotOwn = fmt.Errorf("not the job's own file (a hard link, or another user's): %w", syscall.ELOOP)

// ownFile checks that fi, opened as name in the pod directory, is a file
// the job made: one link, and the owner of the pod directory.
func ownFile(pr *os.Root, name string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	dir, err := pr.Stat(".")
	if err != nil {
		return err
	}
	if ds, ok := dir.Sys().(*syscall.Stat_t); ok && (st.Nlink != 1 || st.Uid != ds.Uid) {
		return fmt.Errorf("%s: %w", name, errNotOwn)
	}
	return nil
}

// openStream opens the pod's directory and looks at one container's
// output. On failure it has written the answer and reports false.
func (s *Server) openStream(w http.ResponseWriter, r *http.Request, pod layout.Pod, q *streamQuery) (*os.Root, streamState, bool) {
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return nil, streamState{}, false
	}
	if q.latest {
		var err error
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

func (st streamState) setHeaders(h http.Header) {
	h.Set(fetch.HeaderSize, strconv.FormatInt(st.size, 10))
	if st.exited {
		h.Set(fetch.HeaderExitCode, strconv.Itoa(st.exitCode))
	}
}

// readQuery is what a log read asks beyond its stream: from where, how
// much at most (capped by the server), how long to wait for output beyond
// the offset, and whether to send the time records.
type readQuery struct {
	offset, max int64
	wait        time.Duration
	times       bool
}

func (s *Server) parseRead(params url.Values) (readQuery, error) {
	q := readQuery{times: params.Get("times") == "1"}
	var err error
	if q.offset, err = parseInt(params.Get("offset"), 0); err != nil || q.offset < 0 {
		return q, fmt.Errorf("offset %q must be a non-negative integer", params.Get("offset"))
	}
	if q.max, err = parseInt(params.Get("max"), s.cfg.MaxChunk); err != nil || q.max <= 0 {
		return q, fmt.Errorf("max %q must be a positive integer", params.Get("max"))
	}
	q.max = min(q.max, s.cfg.MaxChunk)
	if v := params.Get("wait"); v != "" {
		if q.wait, err = time.ParseDuration(v); err != nil || q.wait < 0 {
			return q, fmt.Errorf("wait %q must be a duration such as 30s", v)
		}
		q.wait = min(q.wait, s.cfg.MaxWait)
	}
	return q, nil
}

// readLog serves output from an offset: at most max bytes, waiting up to
// wait for output beyond the offset.
func (s *Server) readLog(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	q, err := parseStream(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	rq, err := s.parseRead(r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pr, st, ok := s.openStream(w, r, pod, &q)
	if !ok {
		return
	}
	defer pr.Close()
	offset := rq.offset
	if rq.wait > 0 && st.size <= offset && !st.exited {
		if st, ok = s.longPoll(w, r, pod, pr, q, rq); !ok {
			return
		}
	}
	if offset > st.size {
		st.setHeaders(w.Header())
		writeError(w, http.StatusRequestedRangeNotSatisfiable, fmt.Sprintf("offset %d is past the end of the output (%d bytes)", offset, st.size))
		return
	}
	n := min(st.size-offset, rq.max)
	next := offset + n
	h := w.Header()
	if rq.times && n > 0 {
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
	s.copyLog(w, pr, q, offset, n)
}

// longPoll waits, within the caps on waiting reads, for output past the
// read's offset or the container's end. Not ok: the answer is written (or
// the client is gone).
func (s *Server) longPoll(w http.ResponseWriter, r *http.Request, pod layout.Pod, pr *os.Root, q streamQuery, rq readQuery) (streamState, bool) {
	user := ownerOf(pr)
	caps := pollCaps{total: s.cfg.MaxLongPolls, perPod: s.cfg.MaxLongPollsPerPod, perClient: s.clientCap(),
		perUser: s.userShare(s.cfg.MaxLongPolls, s.cfg.MaxLongPollsPerPod)}
	if code, why := s.polls.acquire(callerOf(r), pod.Dir(), user, caps); code != 0 {
		w.Header().Set("Retry-After", "1")
		writeError(w, code, why)
		return streamState{}, false
	}
	defer s.polls.release(callerOf(r), pod.Dir(), user)
	st, err := s.waitForOutput(r.Context(), pod, pr, q, rq.offset, rq.wait)
	if err != nil {
		if r.Context().Err() == nil { // else the client went away
			s.fsError(w, "log", err)
		}
		return st, false
	}
	return st, true
}

// copyLog sends n bytes of the log from offset, headers already set.
func (s *Server) copyLog(w http.ResponseWriter, pr *os.Root, q streamQuery, offset, n int64) {
	f, err := openPlain(pr, layout.LogFile(q.container, q.attempt))
	if err != nil {
		w.Header().Del("Content-Length")
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
	// creates it; the poll covers writes inotify cannot see. Only a real
	// directory: inotify follows links, and where a link points is the
	// job's to choose (checked again once watched, as the job may swap
	// it meanwhile).
	isDir := func() bool { fi, err := pr.Lstat(q.container); return err == nil && fi.IsDir() }
	events, stop := s.watch.subscribe(pod.Path(s.cfg.Root))
	if isDir() {
		stop()
		events, stop = s.watch.subscribe(pod.Path(s.cfg.Root, q.container))
		if !isDir() {
			stop()
			events, stop = s.watch.subscribe(pod.Path(s.cfg.Root))
		}
	}
	defer func() { stop() }()
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
