package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// look reads the marker before the size: the job writes the marker after
// the last byte, so a size taken after seeing the marker is final.
func look(pr *os.Root, q streamQuery) (streamState, error) {
	var st streamState
	f, err := openPlain(pr, layout.ExitFile(q.container, q.attempt))
	switch {
	case err == nil:
		var b [maxMarker]byte
		n, _ := io.ReadFull(f, b[:])
		if fi, err := f.Stat(); err == nil {
			st.exitedAt = fi.ModTime()
		}
		f.Close()
		st.exited = true
		st.exitCode, st.reason, st.message = parseMarker(string(b[:n]))
	case !errors.Is(err, fs.ErrNotExist):
		return st, err
	}
	fi, err := pr.Lstat(layout.LogFile(q.container, q.attempt))
	switch {
	case err == nil:
		if !fi.Mode().IsRegular() {
			return st, fmt.Errorf("log: %w", syscall.ELOOP)
		}
		if err := ownFile(pr, "log", fi); err != nil {
			return st, err // not even its size
		}
		st.exists, st.size, st.mtime = true, fi.Size(), fi.ModTime()
	case !errors.Is(err, fs.ErrNotExist):
		return st, err
	}
	if fi, err := pr.Lstat(layout.StartFile(q.container, q.attempt)); err == nil && fi.Mode().IsRegular() {
		st.startedAt = fi.ModTime()
	}
	if !st.exited {
		st.ready = plainExists(pr, layout.ReadyFile(q.container, q.attempt))
		st.started = plainExists(pr, layout.StartedFile(q.container, q.attempt))
		st.postStarted = plainExists(pr, layout.PostStartFile(q.container, q.attempt))
	}
	return st, nil
}

// plainExists says whether name is a regular file (a probe's flag).
func plainExists(pr *os.Root, name string) bool {
	fi, err := pr.Lstat(name)
	return err == nil && fi.Mode().IsRegular()
}

// maxAttemptScan bounds the entries of a container directory read to find
// its latest attempt (the job keeps two attempts' files; anything else in
// there is the job's own doing).
const maxAttemptScan = 4096

// latestAttempt is the highest attempt with a file in the container's
// directory; 0 when it has none yet.
func latestAttempt(pr *os.Root, container string) (int, error) {
	// O_DIRECTORY|O_NONBLOCK: a FIFO or device the job put in the
	// directory's place is refused at once, never waited on.
	d, err := pr.OpenFile(container, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer d.Close()
	latest, seen := 0, 0
	for seen < maxAttemptScan {
		names, err := d.Readdirnames(256)
		for _, name := range names {
			if n, _, ok := layout.ParseAttemptFile(name); ok && n > latest {
				latest = n
			}
		}
		seen += len(names)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	return latest, nil
}

// parseMarker reads an exit marker: the exit code on the first line, then
// optionally a reason (one word) and a message, or an empty reason line
// and the container's termination message, kept byte for byte. A marker
// it cannot read still means the container ended: code -1.
func parseMarker(s string) (code int, reason, message string) {
	first, rest, _ := strings.Cut(s, "\n")
	code, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		code = -1
	}
	reason, message, _ = strings.Cut(rest, "\n")
	if reason == "" {
		return code, "", strings.ToValidUTF8(message, "\uFFFD")
	}
	reason = strings.TrimSpace(reason)
	if strings.ContainsFunc(reason, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') }) || len(reason) > 64 {
		return code, "", ""
	}
	return code, reason, strings.TrimSpace(strings.ToValidUTF8(message, "\uFFFD"))
}

// info reports a stream's size and state, and where its last tail_lines
// lines start.
func (s *Server) info(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	q, err := parseStream(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	tail := int64(-1)
	if v := r.URL.Query().Get("tail_lines"); v != "" {
		if tail, err = strconv.ParseInt(v, 10, 64); err != nil || tail < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("tail_lines %q must be a non-negative integer", v))
			return
		}
	}
	var since time.Time
	if v := r.URL.Query().Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("since %q must be an RFC 3339 time", v))
			return
		}
	}
	pr, st, ok := s.openStream(w, r, pod, &q)
	if !ok {
		return
	}
	defer pr.Close()
	body := st.info(q.attempt)
	if !since.IsZero() {
		off, err := s.sinceOffset(r.Context(), pr, q, st, since)
		if err != nil {
			s.fsError(w, "log", err)
			return
		}
		body.SinceOffset = &off
	}
	if tail >= 0 {
		off := st.size
		if st.exists && tail > 0 {
			f, err := openPlain(pr, layout.LogFile(q.container, q.attempt))
			if err != nil {
				s.fsError(w, "log", err)
				return
			}
			off, err = TailOffset(r.Context(), f, st.size, tail)
			f.Close()
			if err != nil {
				s.fsError(w, "log", err)
				return
			}
		}
		body.TailOffset = &off
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(body)
}

// info is the protocol's view of a stream state.
func (st streamState) info(attempt int) fetch.Info {
	body := fetch.Info{Attempt: attempt, Exists: st.exists, Size: st.size, Exited: st.exited}
	if st.exited {
		body.ExitCode = &st.exitCode
		body.Reason, body.Message = st.reason, st.message
		if !st.exitedAt.IsZero() {
			body.ExitedAt = &st.exitedAt
		}
	}
	if !st.startedAt.IsZero() {
		body.StartedAt = &st.startedAt
	}
	body.Ready, body.Started, body.PostStarted = st.ready, st.started, st.postStarted
	return body
}

// maxContainers bounds the containers one containers request names.
const maxContainers = 128

// containers reports, for each container named (?name=, repeated), its
// latest attempt and the one before: what a pod's status is made of, in
// one request.
func (s *Server) containers(w http.ResponseWriter, r *http.Request, pod layout.Pod) {
	names := r.URL.Query()["name"]
	if len(names) == 0 || len(names) > maxContainers {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("name 1 to %d containers", maxContainers))
		return
	}
	for _, n := range names {
		if err := layout.ValidateContainer(n); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	pr, ok := s.podDir(w, r, pod)
	if !ok {
		return
	}
	defer pr.Close()
	out := map[string]fetch.Container{}
	for _, n := range names {
		latest, err := latestAttempt(pr, n)
		if err != nil {
			s.fsError(w, "container directory", err)
			return
		}
		q := streamQuery{container: n, attempt: latest}
		st, err := look(pr, q)
		if err != nil {
			s.fsError(w, "log", err)
			return
		}
		c := fetch.Container{Current: st.info(latest)}
		if latest > 0 {
			q.attempt--
			if st, err = look(pr, q); err != nil {
				s.fsError(w, "log", err)
				return
			}
			prev := st.info(q.attempt)
			c.Previous = &prev
		}
		out[n] = c
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// MaxTailScan bounds how far back TailOffset looks for line starts: output
// without newlines (a progress bar, binary data) would otherwise be read
// whole for one --tail. Past it, the tail starts at the bound.
const MaxTailScan = 16 << 20

// TailOffset returns the offset where the last n lines of the first size
// bytes of r start, reading backwards in blocks (never the whole file, and
// at most MaxTailScan bytes: past that the tail starts there). A final
// newline ends the last line; a last line without one still counts. It
// stops with ctx's error when ctx ends (the client went away).
func TailOffset(ctx context.Context, r io.ReaderAt, size, n int64) (int64, error) {
	if n <= 0 {
		return size, nil
	}
	const block = 64 << 10
	buf := make([]byte, block)
	end := size
	first := true
	var found int64
	for end > 0 {
		if size-end >= MaxTailScan {
			return end, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		start := end - block
		if start < 0 {
			start = 0
		}
		chunk := buf[:end-start]
		if _, err := r.ReadAt(chunk, start); err != nil && err != io.EOF {
			return 0, err
		}
		i := len(chunk) - 1
		if first {
			first = false
			if chunk[i] == '\n' {
				i-- // the final newline ends the last line, it starts none
			}
		}
		for ; i >= 0; i-- {
			if chunk[i] == '\n' {
				found++
				if found == n {
					return start + int64(i) + 1, nil
				}
			}
		}
		end = start
	}
	return 0, nil
}

func parseInt(s string, def int64) (int64, error) {
	if s == "" {
		return def, nil
	}
	return strconv.ParseInt(s, 10, 64)
}
