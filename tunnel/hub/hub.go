// Package hub is the tunnel's meeting point in the fetch endpoint: it keeps
// each pod's agent connection and joins a provider's session to a new
// stream on it. Who may connect is decided before: the fetch endpoint's
// server authenticates both sides and names the pod.
package hub

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// Hub holds the connected agents, one per pod.
type Hub struct {
	max int
	log *slog.Logger

	mu      sync.Mutex
	agents  map[string]*yamux.Session
	joining int // agents upgrading, counted against max
	// owners counts each owner's agents, connected or upgrading, and
	// owner the owner of each connected pod's.
	owners map[int]int
	owner  map[string]int
	closed bool
}

// New makes a hub holding at most maxAgents agents (pods with an exec
// channel open) at once.
func New(maxAgents int, log *slog.Logger) *Hub {
	return &Hub{max: maxAgents, log: log, agents: map[string]*yamux.Session{}, owners: map[int]int{}, owner: map[string]int{}}
}

// Agents is how many agents are connected.
func (h *Hub) Agents() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.agents)
}

// Close drops every agent; they reconnect to the next endpoint.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	agents := h.agents
	h.agents, h.owner, h.owners = map[string]*yamux.Session{}, map[string]int{}, map[int]int{}
	h.mu.Unlock()
	for _, s := range agents {
		s.Close()
	}
}

// Agent takes over an authenticated agent's request for pod, whose
// directory belongs to owner (a uid): it answers 101 and keeps the
// connection as the pod's until it closes. A newer agent for the pod
// replaces the older (a reconnect the older did not see end). One owner's
// pods hold at most share agents, so that one tenant cannot take every
// slot. It reports whether it switched protocols.
func (h *Hub) Agent(w http.ResponseWriter, r *http.Request, pod string, owner, share int) bool {
	// A slot is taken before the upgrade, so that agents connecting at
	// once cannot pass the cap together.
	h.mu.Lock()
	replacing := h.agents[pod] != nil
	full := h.closed || (!replacing && len(h.agents)+h.joining >= h.max)
	mine := !replacing && h.owners[owner] >= share
	if !full && !mine {
		h.joining++
		h.owners[owner]++
	}
	h.mu.Unlock()
	if full {
		http.Error(w, fmt.Sprintf("the fetch endpoint holds %d agents, its most; retry later", h.max), http.StatusServiceUnavailable)
		return false
	}
	if mine {
		http.Error(w, fmt.Sprintf("the pods of this user hold %d agents, their share of the fetch endpoint; retry later", share), http.StatusTooManyRequests)
		return false
	}
	joined := false
	defer func() {
		if !joined {
			h.mu.Lock()
			h.joining--
			h.release(owner)
			h.mu.Unlock()
		}
	}()
	conn, rw, ok := upgrade(w, r)
	if !ok {
		return false
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = nil
	cfg.Logger = slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)
	cfg.AcceptBacklog = 1
	sess, err := yamux.Client(&guard{Conn: tunnel.WithReader(conn, rw.Reader)}, cfg)
	if err != nil {
		conn.Close()
		return true
	}
	h.mu.Lock()
	old := h.agents[pod]
	if old != nil {
		h.release(h.owner[pod]) // the new agent holds the pod's slot
	}
	h.agents[pod], h.owner[pod] = sess, owner
	h.joining--
	joined = true
	h.mu.Unlock()
	if old != nil {
		old.Close()
	}
	h.log.Debug("agent connected", "pod", pod)
	<-sess.CloseChan()
	h.mu.Lock()
	if h.agents[pod] == sess {
		h.forget(pod)
	}
	h.mu.Unlock()
	h.log.Debug("agent gone", "pod", pod)
	return true
}

// release gives back one of owner's slots; h.mu is held.
func (h *Hub) release(owner int) {
	if h.owners[owner]--; h.owners[owner] <= 0 {
		delete(h.owners, owner)
	}
}

// forget removes the pod's connected agent and its slot; h.mu is held.
func (h *Hub) forget(pod string) {
	h.release(h.owner[pod])
	delete(h.agents, pod)
	delete(h.owner, pod)
}

// Drop disconnects the pod's agent, if any: its job ended or the pod is
// gone (its token with it; the agent does not come back).
func (h *Hub) Drop(pod string) {
	h.mu.Lock()
	sess := h.agents[pod]
	if sess != nil {
		h.forget(pod)
	}
	h.mu.Unlock()
	if sess != nil {
		sess.Close()
	}
}

// Session joins an authenticated provider's request for pod to a new
// stream on the pod's agent, both ways, until either side closes.
func (h *Hub) Session(w http.ResponseWriter, r *http.Request, pod string) {
	h.mu.Lock()
	sess := h.agents[pod]
	h.mu.Unlock()
	if sess == nil {
		http.Error(w, "no agent is connected for this pod: its job is not running, or the job's agent cannot reach the fetch endpoint (see the job's output)", http.StatusServiceUnavailable)
		return
	}
	st, err := sess.OpenStream()
	if err != nil {
		http.Error(w, "the pod's agent connection broke: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer st.Close()
	conn, rw, ok := upgrade(w, r)
	if !ok {
		return
	}
	defer conn.Close()
	// To the agent: what the provider sent early is in the reader. An
	// agent that stops reading ends the session (writeTimeout), rather
	// than hold it, and this endpoint's goroutines, forever.
	toAgent := make(chan struct{})
	go func() {
		io.Copy(&deadlineWriter{st}, rw.Reader)
		close(toAgent)
	}()
	fromAgent := make(chan struct{})
	go func() {
		io.Copy(conn, st)
		close(fromAgent)
	}()
	select {
	case <-toAgent:
		// The provider went (or the agent stopped reading): close the
		// stream; the agent ends the command and closes its side, or is
		// given up on.
		st.Close()
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		<-fromAgent
	case <-fromAgent:
		// The agent is done (its Exit frame is written): half-close, and
		// drain what the provider still sends before closing, or the
		// kernel would reset the connection and lose the last frames.
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		st.Close()
		<-toAgent
	}
}

// writeTimeout bounds one write to an agent's stream: the agent's window
// full for this long means it does not read.
const writeTimeout = 30 * time.Second

type deadlineWriter struct{ st *yamux.Stream }

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.st.SetWriteDeadline(time.Now().Add(writeTimeout))
	return d.st.Write(p)
}

// upgrade answers 101 and hands over the connection with deadlines
// cleared (the server's write timeout would otherwise cut a long session).
func upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, *bufio.ReadWriter, bool) {
	if r.Header.Get("Upgrade") != tunnel.Upgrade || r.ProtoMajor != 1 {
		http.Error(w, "want an HTTP/1.1 request with Upgrade: "+tunnel.Upgrade, http.StatusUpgradeRequired)
		return nil, nil, false
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, "cannot take the connection over: "+err.Error(), http.StatusInternalServerError)
		return nil, nil, false
	}
	conn.SetDeadline(time.Time{})
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", tunnel.Upgrade)
	if err := rw.Flush(); err != nil {
		conn.Close()
		return nil, nil, false
	}
	return conn, rw, true
}
