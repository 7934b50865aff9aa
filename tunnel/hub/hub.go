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

	mu     sync.Mutex
	agents map[string]*yamux.Session
	closed bool
}

// New makes a hub holding at most maxAgents agents (pods with an exec
// channel open) at once.
func New(maxAgents int, log *slog.Logger) *Hub {
	return &Hub{max: maxAgents, log: log, agents: map[string]*yamux.Session{}}
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
	h.agents = map[string]*yamux.Session{}
	h.mu.Unlock()
	for _, s := range agents {
		s.Close()
	}
}

// Agent takes over an authenticated agent's request for pod: it answers
// 101 and keeps the connection as the pod's until it closes. A newer
// agent for the pod replaces the older (a reconnect the older did not
// see end).
func (h *Hub) Agent(w http.ResponseWriter, r *http.Request, pod string) {
	h.mu.Lock()
	full := h.closed || (h.agents[pod] == nil && len(h.agents) >= h.max)
	h.mu.Unlock()
	if full {
		http.Error(w, fmt.Sprintf("the fetch endpoint holds %d agents, its most; retry later", h.max), http.StatusServiceUnavailable)
		return
	}
	conn, rw, ok := upgrade(w, r)
	if !ok {
		return
	}
	conn = tunnel.WithReader(conn, rw.Reader)
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = nil
	cfg.Logger = slog.NewLogLogger(h.log.Handler(), slog.LevelDebug)
	sess, err := yamux.Client(conn, cfg)
	if err != nil {
		conn.Close()
		return
	}
	h.mu.Lock()
	old := h.agents[pod]
	h.agents[pod] = sess
	h.mu.Unlock()
	if old != nil {
		old.Close()
	}
	h.log.Debug("agent connected", "pod", pod)
	<-sess.CloseChan()
	h.mu.Lock()
	if h.agents[pod] == sess {
		delete(h.agents, pod)
	}
	h.mu.Unlock()
	h.log.Debug("agent gone", "pod", pod)
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
	done := make(chan struct{}, 2)
	go func() { io.Copy(st, rw.Reader); done <- struct{}{} }() // what the provider sent early is in the reader
	go func() { io.Copy(conn, st); done <- struct{}{} }()
	<-done // either side gone: the deferred closes end the other copy
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
