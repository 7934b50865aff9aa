package server

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"

	"github.com/slurmkube/slurm-vk/internal/tokenfile"
)

// caller is an authenticated client; all reaches every pod.
type caller struct {
	name  string
	token *tokenfile.File
	all   bool
	users map[string]bool
	uids  map[int]bool
}

// caller is who sent the request's bearer token; nil: nobody known.
func (s *Server) caller(r *http.Request) *caller {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return nil
	}
	var found *caller
	for _, c := range s.callers { // every one compared: the time says nothing
		want, err := c.token.Get(false)
		if err != nil {
			s.log.Error("cannot read a client's token file; refusing it", "client", c.name, "err", err)
			continue
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 && found == nil {
			found = c
		}
	}
	return found
}

// reaches says why c may not make the request, or "" if it may: a create
// must name one of c's users. Every other request is checked on the pod
// directory it opens (openPod), so nothing can change between the check
// and the use.
func (s *Server) reaches(c *caller, r *http.Request, create bool) string {
	if u := r.URL.Query().Get("user"); create && !c.all && !c.users[u] {
		return fmt.Sprintf("client %s may not create pod directories for user %q", c.name, u)
	}
	return ""
}

type callerKey struct{}

// errNotYours refuses a pod directory of users the caller may not reach.
var errNotYours = errors.New("the pod belongs to users this client may not reach")

// callerOf is the request's authenticated caller.
func callerOf(r *http.Request) *caller {
	c, _ := r.Context().Value(callerKey{}).(*caller)
	return c
}

// clientCap is how many waiting reads one client may hold when there are
// several: an equal share of the server's, so that no node starves the
// others' kubectl logs -f.
func (s *Server) clientCap() int {
	if len(s.callers) < 2 {
		return s.cfg.MaxLongPolls
	}
	return max(s.cfg.MaxLongPolls/len(s.callers), s.cfg.MaxLongPollsPerPod)
}

// userShare is how much of a server-wide cap the pods of one user (one
// tenant: a namespace in mapped tenancy) may hold when several users are
// configured: an equal share, and never less than least, so that one
// tenant's pods cannot lock the others out of kubectl logs -f or exec.
func (s *Server) userShare(total, least int) int {
	if n := len(s.cfg.Users); n >= 2 {
		return max(total/n, least)
	}
	return total
}

// ownerOf is the uid that owns the pod directory, -1 if unknown.
func ownerOf(pr *os.Root) int {
	fi, err := pr.Stat(".")
	if err != nil {
		return -1
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// polls counts the log reads waiting: in all, per client, per pod and
// per user (the pod directory's owner).
type polls struct {
	mu        sync.Mutex
	total     int
	perClient map[*caller]int
	perPod    map[string]int
	perUser   map[int]int
}

// pollCaps are the caps acquire checks.
type pollCaps struct{ total, perPod, perClient, perUser int }

// acquire takes a place for one more waiting read, or says why there is
// none: the HTTP status and a reason.
func (p *polls) acquire(c *caller, pod string, user int, caps pollCaps) (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.perPod[pod] >= caps.perPod:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads already wait on this pod; retry later", caps.perPod)
	case p.total >= caps.total:
		return http.StatusServiceUnavailable, fmt.Sprintf("%d log reads already wait on this server; retry later", caps.total)
	case p.perClient[c] >= caps.perClient:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads of this client already wait; retry later", caps.perClient)
	case p.perUser[user] >= caps.perUser:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads of this user's pods already wait (its share of the server); retry later", caps.perUser)
	}
	p.total++
	p.perClient[c]++
	p.perPod[pod]++
	p.perUser[user]++
	return 0, ""
}

func (p *polls) release(c *caller, pod string, user int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total--
	if p.perClient[c]--; p.perClient[c] <= 0 {
		delete(p.perClient, c)
	}
	if p.perPod[pod]--; p.perPod[pod] <= 0 {
		delete(p.perPod, pod)
	}
	if p.perUser[user]--; p.perUser[user] <= 0 {
		delete(p.perUser, user)
	}
}
