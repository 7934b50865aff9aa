package server

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

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

// polls counts the log reads waiting: in all, per client and per pod.
type polls struct {
	mu        sync.Mutex
	total     int
	perClient map[*caller]int
	perPod    map[string]int
}

// acquire takes a place for one more waiting read, or says why there is
// none: the HTTP status and a reason.
func (p *polls) acquire(c *caller, pod string, max, perPod, perClient int) (int, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.perPod[pod] >= perPod:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads already wait on this pod; retry later", perPod)
	case p.total >= max:
		return http.StatusServiceUnavailable, fmt.Sprintf("%d log reads already wait on this server; retry later", max)
	case p.perClient[c] >= perClient:
		return http.StatusTooManyRequests, fmt.Sprintf("%d log reads of this client already wait; retry later", perClient)
	}
	p.total++
	p.perClient[c]++
	p.perPod[pod]++
	return 0, ""
}

func (p *polls) release(c *caller, pod string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total--
	if p.perClient[c]--; p.perClient[c] <= 0 {
		delete(p.perClient, c)
	}
	if p.perPod[pod]--; p.perPod[pod] <= 0 {
		delete(p.perPod, pod)
	}
}
