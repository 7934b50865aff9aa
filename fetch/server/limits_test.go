package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/internal/testenv"
)

// waiting is how many log reads wait now.
func (s *Server) waiting() int {
	s.polls.mu.Lock()
	defer s.polls.mu.Unlock()
	return s.polls.total
}

// TestLongPollCaps: a read that would wait beyond the per-pod cap is
// answered at once with 429, beyond the server's cap with 503, both with
// Retry-After; a client that goes away gives its place back.
func TestLongPollCaps(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxLongPolls, c.MaxLongPollsPerPod = 3, 2 })
	e.writeLog("main", 0, "x", nil)
	other := testPod
	other.UID = "0b7c6e3a-9999-2222-3333-444455556666"
	if code, _, body := e.do("PUT", podURL(other), nil); code != 204 {
		t.Fatalf("create: %d %s", code, body)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	poll := func(url string) {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+url+"/containers/main/log?offset=1&wait=60s", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	until := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); e.srv.waiting() != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d reads wait, want %d", e.srv.waiting(), n)
			}
		}
	}
	go poll(podURL(testPod))
	go poll(podURL(testPod))
	until(2)
	code, h, body := e.do("GET", podURL(testPod)+"/containers/main/log?offset=1&wait=60s", nil)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Errorf("a third wait on one pod: %d %v %s, want 429 with Retry-After", code, h, body)
	}
	// Reads that need not wait are never refused.
	if code, _, _ := e.do("GET", podURL(testPod)+"/containers/main/log?offset=0&wait=60s", nil); code != 200 {
		t.Errorf("a read with data to return: %d", code)
	}
	go poll(podURL(other))
	until(3)
	code, h, body = e.do("GET", podURL(other)+"/containers/main/log?offset=0&wait=60s", nil)
	if code != http.StatusServiceUnavailable || h.Get("Retry-After") == "" {
		t.Errorf("a wait beyond the server's cap: %d %v %s, want 503 with Retry-After", code, h, body)
	}
	cancel()
	until(0)
}

// TestLongPollPerClientCap: with several clients (nodes), one client's
// waiting reads take at most its share of the server's places, so a node
// that follows many logs cannot take them all from the others.
func TestLongPollPerClientCap(t *testing.T) {
	nodeB := filepath.Join(t.TempDir(), "node-b")
	os.WriteFile(nodeB, []byte("node-b-token"), 0o600)
	e := newEnv(t, func(c *Config) {
		c.MaxLongPolls, c.MaxLongPollsPerPod = 4, 1 // two callers: 2 each
		c.Users = map[string]Owner{"bob": {UID: 2002, GID: 2002}}
		c.Clients = []Client{{Name: "node-b", TokenFile: nodeB, Users: []string{"bob"}}}
	})
	pods := make([]layout.Pod, 3)
	for i := range pods {
		pods[i] = testPod
		pods[i].UID = fmt.Sprintf("0b7c6e3a-%04d-2222-3333-444455556666", i)
		if code, _, body := e.do("PUT", podURL(pods[i]), nil); code != 204 {
			t.Fatalf("create: %d %s", code, body)
		}
		e.writeLogOf(pods[i], "main", 0, "x", nil)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, p := range pods[:2] {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+podURL(p)+"/containers/main/log?offset=1&wait=60s", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	for deadline := time.Now().Add(30 * time.Second); e.srv.waiting() != 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d reads wait, want 2", e.srv.waiting())
		}
	}
	// A third wait of the same client, on a third pod, with the server at
	// half its places: refused for the client's share.
	code, h, body := e.do("GET", podURL(pods[2])+"/containers/main/log?offset=1&wait=60s", nil)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(string(body), "of this client") {
		t.Errorf("a wait beyond the client's share: %d %v %s, want 429 for the client", code, h, body)
	}
	cancel()
}

// TestLongPollPerUserShare: with several users (tenants), the waiting
// reads of one user's pods take at most their share of the server's
// places, so a tenant following 32 logs on each of 128 pods cannot lock
// the others out of kubectl logs -f; the other user's read still waits.
func TestLongPollPerUserShare(t *testing.T) {
	testenv.NeedRoot(t, "hand pod directories to users")
	alice, bob := Owner{UID: 2001, GID: 2001}, Owner{UID: 2002, GID: 2002}
	e := newEnv(t, func(c *Config) {
		c.MaxLongPolls, c.MaxLongPollsPerPod = 4, 1 // two users: 2 each
		c.Users = map[string]Owner{"alice": alice, "bob": bob}
	})
	pod := func(i int, user string) layout.Pod {
		p := testPod
		p.UID = fmt.Sprintf("0b7c6e3a-%04d-2222-3333-444455556666", i)
		if code, _, body := e.do("PUT", podURL(p)+"?user="+user, nil); code != 204 {
			t.Fatalf("create: %d %s", code, body)
		}
		e.writeLogOf(p, "main", 0, "x", nil)
		o := map[string]Owner{"alice": alice, "bob": bob}[user]
		os.Chown(filepath.Join(e.root, p.Dir(), "main", "0.log"), o.UID, o.GID) // the job's own file
		return p
	}
	alices := []layout.Pod{pod(0, "alice"), pod(1, "alice"), pod(2, "alice")}
	bobs := pod(3, "bob")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := func(p layout.Pod) {
		req, _ := http.NewRequestWithContext(ctx, "GET", e.http.URL+podURL(p)+"/containers/main/log?offset=1&wait=60s", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	until := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); e.srv.waiting() != n; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d reads wait, want %d", e.srv.waiting(), n)
			}
		}
	}
	go wait(alices[0])
	go wait(alices[1])
	until(2)
	code, h, body := e.do("GET", podURL(alices[2])+"/containers/main/log?offset=1&wait=60s", nil)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(string(body), "this user's pods") {
		t.Errorf("a third wait of alice's, server half full: %d %v %s, want 429 for the user's share", code, h, body)
	}
	go wait(bobs)
	until(3) // bob's waits: the server had room, and alice did not take it
	cancel()
	until(0)
}
