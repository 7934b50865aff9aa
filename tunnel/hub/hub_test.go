package hub

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// frame is a raw yamux header: what a hostile agent can write.
func frame(typ byte, flags uint16, stream, length uint32) []byte {
	b := make([]byte, 12)
	b[1] = typ
	binary.BigEndian.PutUint16(b[2:], flags)
	binary.BigEndian.PutUint32(b[4:], stream)
	binary.BigEndian.PutUint32(b[8:], length)
	return b
}

// pong reads frames until yamux's answer to the ping with opaque value v.
func pong(conn io.Reader, v uint32) error {
	hdr := make([]byte, 12)
	for {
		if _, err := io.ReadFull(conn, hdr); err != nil {
			return err
		}
		typ, flags, length := hdr[1], binary.BigEndian.Uint16(hdr[2:]), binary.BigEndian.Uint32(hdr[8:])
		if typ == 2 && flags&2 != 0 && length == v {
			return nil
		}
		if typ == 0 { // data: skip its payload
			if _, err := io.CopyN(io.Discard, conn, int64(length)); err != nil {
				return err
			}
		}
	}
}

// TestHostileAgent: an agent is the job's own program (its user can write
// the pod's token), so the hub drops one that opens streams or floods
// pings (yamux would queue the first and answer each of the second from a
// goroutine) and keeps one whose data frames merely look like them.
func TestHostileAgent(t *testing.T) {
	h := New(10, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.Agent(w, r, "ns_p_u", 0, 10) }))
	defer srv.Close()
	defer h.Close()
	connect := func(t *testing.T) io.ReadWriteCloser {
		u, _ := url.Parse(srv.URL + "/v1/agent/ns/p/u")
		conn, err := tunnel.Dial(context.Background(), u, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(5 * time.Second); h.Agents() == 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the agent never registered")
			}
		}
		return conn
	}
	dropped := func(t *testing.T, conn io.ReadWriteCloser) bool {
		done := make(chan struct{})
		go func() { io.Copy(io.Discard, conn); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			return false
		}
		for deadline := time.Now().Add(5 * time.Second); h.Agents() != 0; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				return false
			}
		}
		return true
	}
	t.Run("opens a stream", func(t *testing.T) {
		conn := connect(t)
		defer conn.Close()
		conn.Write(frame(1, 1, 2, 0)) // window update, SYN, an agent's (even) stream
		if !dropped(t, conn) {
			t.Error("an agent opening a stream was kept")
		}
	})
	t.Run("floods pings", func(t *testing.T) {
		conn := connect(t)
		defer conn.Close()
		for i := range 50 {
			conn.Write(frame(2, 1, 0, uint32(i)))
		}
		if !dropped(t, conn) {
			t.Error("an agent flooding pings was kept")
		}
	})
	t.Run("data that looks like frames is data", func(t *testing.T) {
		conn := connect(t)
		defer conn.Close()
		// A data frame on the hub's stream 1 (an ACK, as an agent answers)
		// whose payload is fifty ping headers.
		payload := []byte(strings.Repeat(string(frame(2, 1, 0, 7)), 50))
		conn.Write(append(frame(0, 2, 1, uint32(len(payload))), payload...))
		// Then one ping: yamux answers it after it has read the data, so
		// the answer (not a pause) shows the data went through the guard.
		conn.Write(frame(2, 1, 0, 4242))
		if err := pong(conn, 4242); err != nil {
			t.Errorf("an agent was dropped for its data: %v", err)
		}
		if h.Agents() != 1 {
			t.Error("an agent was dropped for its data")
		}
	})
}

// TestOwnerShare: one owner's pods (one tenant's) hold at most their
// share of the hub's agent slots: a third agent of alice's, with a share
// of two, is refused (429) while the hub has room, and bob's connects; a
// reconnect of a pod that has an agent replaces it without a slot of its
// own, and a dropped agent gives its slot back.
func TestOwnerShare(t *testing.T) {
	const alice, bob = 2001, 2002
	h := New(10, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner := alice
		if strings.HasPrefix(r.URL.Path, "/bob/") {
			owner = bob
		}
		h.Agent(w, r, r.URL.Path, owner, 2)
	}))
	defer srv.Close()
	defer h.Close()
	connect := func(path string) (net.Conn, error) {
		u, _ := url.Parse(srv.URL + path)
		return tunnel.Dial(context.Background(), u, "", nil)
	}
	until := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); h.Agents() != n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d agents, want %d", h.Agents(), n)
			}
		}
	}
	a1, err := connect("/alice/1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect("/alice/2"); err != nil {
		t.Fatal(err)
	}
	until(2)
	if c, err := connect("/alice/3"); err == nil || !strings.Contains(err.Error(), "429") {
		t.Errorf("alice's third agent: %v, want refused (429)", err)
		if c != nil {
			c.Close()
		}
	}
	if _, err := connect("/bob/1"); err != nil {
		t.Errorf("bob's agent: %v", err)
	}
	until(3)
	if _, err := connect("/alice/1"); err != nil { // a reconnect
		t.Errorf("a reconnect of alice's first pod: %v", err)
	}
	// The hub registers the reconnect after its 101 reaches us, then
	// closes the older connection: its end says the swap (and the slot
	// it gave back) is done.
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, a1); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the reconnect did not replace alice's first agent")
	}
	h.Drop("/alice/2")
	until(2)
	if _, err := connect("/alice/3"); err != nil {
		t.Errorf("alice's third agent once the second is gone: %v", err)
	}
	until(3)
}
