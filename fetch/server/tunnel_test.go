package server

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/tunnel"
	"github.com/slurmkube/slurm-vk/tunnel/agent"
	tunnelclient "github.com/slurmkube/slurm-vk/tunnel/client"
)

// TestTunnel: the endpoint's side of kubectl exec. An agent is let in
// only with its own pod's token (a regular file the provider staged);
// a session reaches only that pod's agent, for a caller that reaches the
// pod; a FIFO in the token's place stalls nothing.
func TestTunnel(t *testing.T) {
	e := newEnv(t)
	a, b := testPod, testPod
	a.UID, b.UID = "0b7c6e3a-aaaa-2222-3333-444455556666", "0b7c6e3a-bbbb-2222-3333-444455556666"
	for _, p := range []layout.Pod{a, b} {
		if code, _, body := e.do("PUT", podURL(p), nil); code != 204 {
			t.Fatalf("create: %d %s", code, body)
		}
	}
	if code, _, body := e.do("PUT", podURL(a)+"/files/"+layout.StagedAgentToken+"?mode=0400", []byte("token-of-a\n")); code != 204 {
		t.Fatalf("stage a's token: %d %s", code, body)
	}
	dial := func(p layout.Pod, tok string) error {
		u, _ := url.Parse(e.http.URL + "/v1/agent/" + p.Namespace + "/" + p.Name + "/" + p.UID)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := tunnel.Dial(ctx, u, "", http.Header{"Authorization": {"Bearer " + tok}})
		if err == nil {
			conn.Close()
		}
		return err
	}
	refused := func(err error) int {
		var r *tunnel.RefusedError
		if errors.As(err, &r) {
			return r.Status
		}
		return 0
	}
	if err := dial(a, "token-of-b"); refused(err) != 401 {
		t.Errorf("a's agent with a wrong token: %v, want 401", err)
	}
	if err := dial(b, "token-of-a"); refused(err) != 401 {
		t.Errorf("b (no token staged) with a's token: %v, want 401", err)
	}
	if err := dial(a, token); refused(err) != 401 {
		t.Errorf("a's agent with the provider's token: %v, want 401 (agents prove the pod, not the client)", err)
	}
	bTok := filepath.Join(e.root, b.Dir(), layout.Staged(layout.StagedAgentToken))
	os.MkdirAll(filepath.Dir(bTok), 0o755)
	if err := syscall.Mkfifo(bTok, 0o644); err != nil {
		t.Fatal(err)
	}
	// A stalled open would be the dial's own deadline (5 s), not a 401.
	if err := dial(b, "anything"); refused(err) != 401 {
		t.Errorf("a FIFO as b's token: %v, want 401 at once", err)
	}
	os.Remove(bTok)
	os.Symlink(filepath.Join(e.root, a.Dir(), layout.Staged(layout.StagedAgentToken)), bTok)
	if err := dial(b, "token-of-a"); refused(err) != 401 {
		t.Errorf("b's token a link to a's: %v, want 401", err)
	}

	// A real agent for a, whose container is a process of this test.
	main := exec.Command("sleep", "600")
	main.Env = []string{"PATH=/usr/bin:/bin"}
	if err := main.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { main.Process.Kill(); main.Wait() })
	pids := t.TempDir()
	os.WriteFile(filepath.Join(pids, "main"), []byte(strconv.Itoa(main.Process.Pid)), 0o644)
	tokFile := filepath.Join(t.TempDir(), "agent-token")
	os.WriteFile(tokFile, []byte("token-of-a\n"), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		agent.Run(ctx, agent.Config{URL: e.http.URL, Namespace: a.Namespace, Name: a.Name, UID: a.UID, TokenFile: tokFile,
			Containers: agent.Containers{PIDDir: pids}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	}()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); e.srv.hub.Agents() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a's agent never connected")
		}
	}
	provTok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(provTok, []byte(token), 0o600)
	c := tunnelclient.New(tunnelclient.Config{URL: e.http.URL, TokenFile: provTok})
	var out bytes.Buffer
	exit, err := c.Exec(context.Background(), a.Namespace, a.Name, a.UID, tunnel.Request{Kind: "exec", Container: "main", Command: []string{"echo", "through the endpoint"}},
		tunnelclient.Streams{Stdout: &out})
	if err != nil || exit.Code != 0 || out.String() != "through the endpoint\n" {
		t.Errorf("exec on a: %+v %v %q", exit, err, out.String())
	}
	if _, err := c.Exec(context.Background(), b.Namespace, b.Name, b.UID, tunnel.Request{Kind: "exec", Container: "main", Command: []string{"true"}}, tunnelclient.Streams{}); !errors.Is(err, tunnelclient.ErrNoAgent) {
		t.Errorf("exec on b, whose agent never came: %v, want ErrNoAgent (a's agent must not serve it)", err)
	}
	badTok := filepath.Join(t.TempDir(), "bad")
	os.WriteFile(badTok, []byte("not-the-token"), 0o600)
	_, err = tunnelclient.New(tunnelclient.Config{URL: e.http.URL, TokenFile: badTok}).Exec(context.Background(), a.Namespace, a.Name, a.UID,
		tunnel.Request{Kind: "exec", Container: "main", Command: []string{"true"}}, tunnelclient.Streams{})
	if refused(err) != 401 {
		t.Errorf("a session without the provider's token: %v, want 401", err)
	}
}
