package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/tunnel"
	"github.com/slurmkube/slurm-vk/tunnel/agent"
	"github.com/slurmkube/slurm-vk/tunnel/client"
	"github.com/slurmkube/slurm-vk/tunnel/hub"
)

// rig is a hub on loopback (without the fetch endpoint's authentication,
// which fetch/server tests), an agent for pod ns/p/u whose container
// "main" is a real process, and a client.
type rig struct {
	url    string
	hub    *hub.Hub
	client *client.Client
	dir    string // the container's working directory
}

func newRig(t *testing.T, runAgent bool) *rig {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := hub.New(10, log)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		switch {
		case len(parts) == 5 && parts[1] == "agent":
			h.Agent(w, r, strings.Join(parts[2:], "/"), 0, 16)
		case len(parts) == 6 && parts[1] == "pods" && parts[5] == "tunnel":
			h.Session(w, r, strings.Join(parts[2:5], "/"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { h.Close(); srv.Close() })
	base := t.TempDir()
	r := &rig{url: srv.URL, hub: h, dir: filepath.Join(base, "work")}
	token := filepath.Join(base, "token")
	os.WriteFile(token, []byte("secret\n"), 0o600)
	r.client = client.New(client.Config{URL: srv.URL, TokenFile: token})
	if !runAgent {
		return r
	}
	// The container: a process with its own env and working directory.
	os.Mkdir(r.dir, 0o755)
	pids := filepath.Join(base, "pids")
	os.Mkdir(pids, 0o755)
	main := exec.Command("sleep", "600")
	main.Env, main.Dir = []string{"PATH=/usr/bin:/bin", "GREETING=from the container"}, r.dir
	if err := main.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { main.Process.Kill(); main.Wait() })
	os.WriteFile(filepath.Join(pids, "main"), []byte(strconv.Itoa(main.Process.Pid)+"\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		agent.Run(ctx, agent.Config{URL: srv.URL, Namespace: "ns", Name: "p", UID: "u", TokenFile: token,
			Containers: agent.Containers{PIDDir: pids, Runtime: "none"}, Logger: log})
	}()
	t.Cleanup(func() { cancel(); <-done })
	for deadline := time.Now().Add(10 * time.Second); h.Agents() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the agent never connected")
		}
	}
	return r
}

func (r *rig) exec(t *testing.T, ctx context.Context, req tunnel.Request, s client.Streams) tunnel.Exit {
	t.Helper()
	req.Kind = "exec"
	if req.Container == "" {
		req.Container = "main"
	}
	exit, err := r.client.Exec(ctx, "ns", "p", "u", req, s)
	if err != nil {
		t.Fatalf("exec %v: %v", req.Command, err)
	}
	return exit
}

func TestExec(t *testing.T) {
	r := newRig(t, true)
	ctx := context.Background()

	t.Run("output, the container's env and directory, the exit code", func(t *testing.T) {
		var out, errb bytes.Buffer
		exit := r.exec(t, ctx, tunnel.Request{Command: []string{"sh", "-c", `echo "$GREETING"; pwd; echo oops >&2; exit 3`}},
			client.Streams{Stdout: &out, Stderr: &errb})
		if exit.Code != 3 || exit.Error != "" {
			t.Errorf("exit %+v, want code 3", exit)
		}
		if want := "from the container\n" + r.dir + "\n"; out.String() != want {
			t.Errorf("stdout %q, want %q", out.String(), want)
		}
		if errb.String() != "oops\n" {
			t.Errorf("stderr %q", errb.String())
		}
	})

	t.Run("stdin, to its end", func(t *testing.T) {
		var out bytes.Buffer
		in := strings.Repeat("0123456789abcdef", 8<<10) // 128 KiB: several frames
		exit := r.exec(t, ctx, tunnel.Request{Command: []string{"wc", "-c"}, Stdin: true},
			client.Streams{Stdin: strings.NewReader(in), Stdout: &out})
		if exit.Code != 0 || strings.TrimSpace(out.String()) != strconv.Itoa(len(in)) {
			t.Errorf("exit %+v, wc -c said %q, want %d", exit, out.String(), len(in))
		}
	})

	t.Run("a terminal, resized", func(t *testing.T) {
		var out syncBuffer
		in, w := io.Pipe()
		resize := make(chan tunnel.TermSize, 1)
		resize <- tunnel.TermSize{Width: 100, Height: 40}
		go func() { time.Sleep(200 * time.Millisecond); io.WriteString(w, "go\n") }()
		exit := r.exec(t, ctx, tunnel.Request{Command: []string{"sh", "-c", `read x; tty; stty size`}, Stdin: true, TTY: true},
			client.Streams{Stdin: in, Stdout: &out, Resize: resize})
		w.Close()
		if exit.Code != 0 || !strings.Contains(out.String(), "/dev/pts/") || !strings.Contains(out.String(), "40 100") {
			t.Errorf("exit %+v, output %q: want a pts and size 40 100", exit, out.String())
		}
	})

	t.Run("errors a user can read", func(t *testing.T) {
		for _, c := range []struct {
			req  tunnel.Request
			want string
		}{
			{tunnel.Request{Command: []string{"no-such-command"}}, `"no-such-command": executable file not found in the container's $PATH`},
			{tunnel.Request{Container: "sidecar", Command: []string{"true"}}, `container "sidecar" is not running`},
			{tunnel.Request{Container: "../etc", Command: []string{"true"}}, `no container "../etc"`},
		} {
			exit := r.exec(t, ctx, c.req, client.Streams{})
			if exit.Code != -1 || exit.Error != c.want {
				t.Errorf("%v in %q: %+v, want error %q", c.req.Command, c.req.Container, exit, c.want)
			}
		}
	})

	t.Run("the caller going away kills the command", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			_, err := r.client.Exec(cctx, "ns", "p", "u", tunnel.Request{Kind: "exec", Container: "main", Command: []string{"sh", "-c", "echo $$; exec sleep 600"}},
				client.Streams{Stdout: pw})
			pw.Close()
			errc <- err
		}()
		var pid int
		if _, err := fmt.Fscan(pr, &pid); err != nil {
			t.Fatal(err)
		}
		go io.Copy(io.Discard, pr)
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Exec after cancel: %v", err)
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				break
			}
			if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(st), ") Z ") {
				break // a zombie: dead, its parent (the agent) reaps it
			}
			if time.Now().After(deadline) {
				t.Fatalf("the command (pid %d) outlived its session", pid)
			}
		}
	})
}

func TestNoAgent(t *testing.T) {
	r := newRig(t, false)
	_, err := r.client.Exec(context.Background(), "ns", "p", "u", tunnel.Request{Kind: "exec", Container: "main", Command: []string{"true"}}, client.Streams{})
	if !errors.Is(err, client.ErrNoAgent) {
		t.Errorf("exec without an agent: %v, want ErrNoAgent", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// rw is one forwarded connection's local end: it sends in, then a
// half-close, and keeps what comes back.
type rw struct {
	in  io.Reader
	out syncBuffer
}

func (s *rw) Read(p []byte) (int, error)  { return s.in.Read(p) }
func (s *rw) Write(p []byte) (int, error) { return s.out.Write(p) }

func TestPortForward(t *testing.T) {
	r := newRig(t, true)
	// A server on the job's node that answers once its client's half
	// closes, as an HTTP/1.0 server would.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				fmt.Fprintf(c, "got %d bytes", n)
			}()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	var wg sync.WaitGroup
	for i := range 5 { // at once, on the one agent connection
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := &rw{in: strings.NewReader(strings.Repeat("x", 100000*(i+1)))}
			if err := r.client.PortForward(context.Background(), "ns", "p", "u", port, s); err != nil {
				t.Errorf("forward %d: %v", i, err)
			}
			if want := fmt.Sprintf("got %d bytes", 100000*(i+1)); s.out.String() != want {
				t.Errorf("forward %d: %q, want %q", i, s.out.String(), want)
			}
		}()
	}
	wg.Wait()
	l.Close()
	err = r.client.PortForward(context.Background(), "ns", "p", "u", port, &rw{in: strings.NewReader("")})
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("nothing listens on port %d", port)) {
		t.Errorf("forward to a closed port: %v", err)
	}
}
