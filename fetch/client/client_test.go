package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/server"
	"github.com/slurmkube/slurm-vk/internal/testbin"
)

const token = "client-test-token"

var pod = layout.Pod{Namespace: "ns", Name: "job-pod", UID: "5f0c1e9e-aaaa-bbbb-cccc-ddddeeeeffff"}

// fixture is a real directory served by a real server.
type fixture struct {
	root, tokenFile string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{root: filepath.Join(base, "root"), tokenFile: filepath.Join(base, "token")}
	if err := os.MkdirAll(filepath.Join(f.root, pod.Dir(), "main"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) logPath(container string) string {
	return filepath.Join(f.root, pod.Dir(), layout.LogFile(container, 0))
}

// exit writes the container's exit marker. Writers run in goroutines of
// their own, so a failure is t.Error (t.Fatal must stay on the test's).
func (f *fixture) exit(t testing.TB, container string, code int) {
	t.Helper()
	p := filepath.Join(f.root, pod.Dir(), layout.ExitFile(container, 0))
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%d\n", code)), 0o644); err != nil {
		t.Error(err)
	}
}

// serve starts an in-process server on the fixture.
func (f *fixture) serve(t testing.TB) string {
	t.Helper()
	return fetchtest.Start(t, server.Config{Root: f.root, TokenFile: f.tokenFile, PollInterval: 50 * time.Millisecond, MaxWait: 10 * time.Minute})
}

func newClient(t testing.TB, url string, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: url, TokenFile: filepath.Join(t.TempDir(), "token"), InitialBackoff: 20 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond, Wait: 2 * time.Second, RetryFor: 5 * time.Second}
	if err := os.WriteFile(cfg.TokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func readAll(t testing.TB, c *Client, opts LogOptions) []byte {
	t.Helper()
	rc, err := c.Logs(context.Background(), pod, "main", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeRandom writes n bytes of seeded pseudo-random binary data.
func writeRandom(t testing.TB, path string, n int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{byte(seed)}), n); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return [32]byte(h.Sum(nil))
}

func TestByteExact100MB(t *testing.T) {
	f := newFixture(t)
	writeRandom(t, f.logPath("main"), 100<<20+12345, 1)
	f.exit(t, "main", 0)
	c := newClient(t, f.serve(t), func(c *Config) { c.Chunk = 1 << 20 })
	want := fileSum(t, f.logPath("main"))
	for _, follow := range []bool{false, true} {
		rc, err := c.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1, Follow: follow})
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil || [32]byte(h.Sum(nil)) != want {
			t.Fatalf("follow=%v: %d bytes, err %v, sha256 differs: %v", follow, n, err, [32]byte(h.Sum(nil)) != want)
		}
	}
}

func TestTailAndLimit(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.serve(t))
	tests := []struct {
		name  string
		data  string
		tail  int64
		limit int64
		want  string
	}{
		{"all", "a\nb\nc\n", -1, 0, "a\nb\nc\n"},
		{"tail 0", "a\nb\nc\n", 0, 0, ""},
		{"tail 1", "a\nb\nc\n", 1, 0, "c\n"},
		{"tail larger than the file", "a\nb\nc\n", 100, 0, "a\nb\nc\n"},
		{"last line without newline", "a\nb\nc", 1, 0, "c"},
		{"last two without newline", "a\nb\nc", 2, 0, "b\nc"},
		{"limit 1 byte", "a\nb\nc\n", -1, 1, "a"},
		{"limit past the end", "abc", -1, 100, "abc"},
		{"tail then limit", "first\nsecond\nthird\n", 2, 3, "sec"},
		{"empty", "", 5, 0, ""},
		{"binary", "\x00\xff\n\x00", 1, 0, "\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(f.logPath("main"), []byte(tt.data), 0o644); err != nil {
				t.Fatal(err)
			}
			for _, follow := range []bool{false, true} {
				if follow {
					f.exit(t, "main", 0)
				}
				got := readAll(t, c, LogOptions{TailLines: tt.tail, LimitBytes: tt.limit, Follow: follow})
				if string(got) != tt.want {
					t.Errorf("follow=%v: %q, want %q", follow, got, tt.want)
				}
			}
			os.Remove(filepath.Join(f.root, pod.Dir(), layout.ExitFile("main", 0)))
		})
	}
}

// appender writes random-sized chunks at random intervals, then the exit
// marker; it returns what it wrote.
func appender(t testing.TB, f *fixture, d time.Duration, seed uint64) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		r := rand.New(rand.NewPCG(seed, seed))
		var all bytes.Buffer
		file, err := os.OpenFile(f.logPath("main"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			out <- nil
			return
		}
		end := time.Now().Add(d)
		for i := 0; time.Now().Before(end); i++ {
			chunk := make([]byte, 1+r.IntN(64<<10))
			for j := range chunk {
				chunk[j] = byte(r.Uint32())
			}
			file.Write(chunk)
			all.Write(chunk)
			time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
		}
		file.Close()
		f.exit(t, "main", 0)
		out <- all.Bytes()
	}()
	return out
}

func TestFollowWhileWriting(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.serve(t), func(c *Config) { c.Wait = time.Minute })
	wrote := appender(t, f, 2*time.Second, 7)
	rc, err := c.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	ended := time.Now()
	if err != nil {
		t.Fatal(err)
	}
	want := <-wrote
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, wrote %d; equal prefix: %v", len(got), len(want), bytes.HasPrefix(want, got))
	}
	st, _ := os.Stat(filepath.Join(f.root, pod.Dir(), layout.ExitFile("main", 0)))
	// A long-poll waits a minute: ending well before shows the marker
	// ended it. Generous, for 2 busy cores.
	if lag := ended.Sub(st.ModTime()); lag > 20*time.Second {
		t.Errorf("stream ended %v after the exit marker", lag)
	}
}

// fetchd runs the real slurm-fetchd binary, so that it can be killed.
type fetchd struct {
	t    testing.TB
	f    *fixture
	addr string
	args []string // extra flags; tests default to a 50ms poll interval
	cmd  *exec.Cmd
}

// start runs slurm-fetchd: the first time on a port the kernel picks
// (read back from its "listening" log line, so no other process can take
// it between a check and the listen), later on the same address, where the
// client reconnects.
func (d *fetchd) start() {
	d.t.Helper()
	if err := d.tryStart(); err != nil {
		d.t.Fatal(err)
	}
}

// tryStart is start for a goroutine other than the test's.
func (d *fetchd) tryStart() error {
	args := d.args
	if args == nil {
		args = []string{"-poll-interval", "50ms"}
	}
	listen := d.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	d.cmd = exec.Command(testbin.Path(d.t, "slurm-fetchd"), append([]string{"-listen", listen, "-root", d.f.root, "-token-file", d.f.tokenFile}, args...)...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := d.cmd.Start(); err != nil {
		return err
	}
	addr := fetchtest.Listening(stderr)
	a, ok := <-addr
	if !ok {
		d.cmd.Wait()
		return fmt.Errorf("slurm-fetchd (-listen %s) ended before it listened", listen)
	}
	d.addr = a
	return nil
}

func (d *fetchd) kill() {
	d.cmd.Process.Kill()
	d.cmd.Wait()
}

// killThrice kills the endpoint (SIGKILL: answers cut mid-body,
// connections reset) three times while a stream reads, each time down a
// little longer, and starts it again.
func (d *fetchd) killThrice() {
	for i := 0; i < 3; i++ {
		time.Sleep(700 * time.Millisecond)
		d.kill()
		time.Sleep(time.Duration(100+200*i) * time.Millisecond)
		d.start()
	}
}

func TestFollowSurvivesEndpointRestarts(t *testing.T) {
	f := newFixture(t)
	d := &fetchd{t: t, f: f}
	d.start()
	defer func() { d.kill() }()
	c := newClient(t, "http://"+d.addr)
	wrote := appender(t, f, 4*time.Second, 11)
	got := followThroughKills(t, c, d, LogOptions{TailLines: -1, Follow: true})
	want := <-wrote
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes, wrote %d (prefix: %v)", len(got), len(want), bytes.HasPrefix(want, got))
	}
}

// followThroughKills follows the log while the endpoint is killed three
// times, and returns what the stream delivered.
func followThroughKills(t *testing.T, c *Client, d *fetchd, opts LogOptions) []byte {
	t.Helper()
	rc, err := c.Logs(context.Background(), pod, "main", opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var got bytes.Buffer
	done := make(chan error, 1)
	go func() { _, err := io.Copy(&got, rc); done <- err }()
	d.killThrice()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return got.Bytes()
}

func TestFollowStartsWhileEndpointDown(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(f.logPath("main"), []byte("early\n"), 0o644)
	// The client needs the address before anything listens on it: a port
	// that was free a moment ago (should another process take it
	// meanwhile, the start fails and says so).
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	d := &fetchd{t: t, f: f, addr: l.Addr().String()}
	c := newClient(t, "http://"+d.addr)
	started := make(chan error, 1)
	go func() {
		time.Sleep(500 * time.Millisecond)
		err := d.tryStart()
		started <- err
		if err == nil {
			time.Sleep(200 * time.Millisecond)
			f.exit(t, "main", 0)
		}
	}()
	got := readAll(t, c, LogOptions{TailLines: -1, Follow: true})
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	d.kill()
	if string(got) != "early\n" {
		t.Fatalf("%q", got)
	}
}

func TestCancelReturnsPromptlyWithoutLeaks(t *testing.T) {
	// Registered first, so it runs after every other cleanup (the server's).
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	f := newFixture(t)
	os.WriteFile(f.logPath("main"), []byte("x\n"), 0o644)
	url := f.serve(t)
	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			c := newClient(t, url, func(c *Config) { c.Wait = time.Minute })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rc, err := c.Logs(ctx, pod, "main", LogOptions{TailLines: -1, Follow: true})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 10)
			if n, err := rc.Read(buf); n != 2 || err != nil {
				t.Fatalf("first read: %d %v", n, err)
			}
			returned := make(chan time.Time, 1)
			go func() {
				rc.Read(buf) // blocks in a long-poll
				returned <- time.Now()
			}()
			time.Sleep(200 * time.Millisecond)
			start := time.Now()
			if how == "cancel" {
				cancel()
			} else {
				rc.Close()
			}
			select {
			case at := <-returned:
				// The long-poll waits a minute: returning well before that
				// shows the cancel reached it. Generous, for 2 busy cores.
				if d := at.Sub(start); d > 10*time.Second {
					t.Errorf("Read returned %v after %s", d, how)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("Read still blocked after %s", how)
			}
			rc.Close()
			c.CloseIdleConnections()
		})
	}
}

func TestTerminatedWithoutExitMarker(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(f.logPath("main"), []byte("before\n"), 0o644)
	c := newClient(t, f.serve(t), func(c *Config) { c.Wait = 10 * time.Minute })
	term := make(chan struct{})
	rc, err := c.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1, Follow: true, Terminated: term})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	go func() {
		time.Sleep(300 * time.Millisecond)
		// The job was killed: its last words land, then Slurm reports it gone.
		file, _ := os.OpenFile(f.logPath("main"), os.O_APPEND|os.O_WRONLY, 0)
		file.WriteString("last words\n")
		file.Close()
		time.Sleep(100 * time.Millisecond)
		close(term)
	}()
	start := time.Now()
	got, err := io.ReadAll(rc)
	if err != nil || string(got) != "before\nlast words\n" {
		t.Fatalf("%q %v", got, err)
	}
	// The long-poll waits ten minutes; ending well before shows
	// Terminated ended it, however busy the machine.
	if d := time.Since(start); d > 5*time.Minute {
		t.Errorf("ended %v after start; Terminated should end it promptly", d)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t)
	url := f.serve(t)
	bad := newClient(t, url)
	os.WriteFile(bad.cfg.TokenFile, []byte("wrong"), 0o600)
	if _, err := bad.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1}); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("bad token: %v", err)
	}
	c := newClient(t, url)
	other := layout.Pod{Namespace: "ns", Name: "gone", UID: "u"}
	_, err := c.Logs(context.Background(), other, "main", LogOptions{TailLines: -1})
	var fe *Error
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &fe) || !strings.Contains(fe.Reason, "pod directory") {
		t.Errorf("unknown pod: %v", err)
	}
	if _, err := c.Logs(context.Background(), pod, "Bad_Name", LogOptions{}); err == nil {
		t.Error("invalid container name accepted")
	}
}

func TestStagingRoundTrip(t *testing.T) {
	f := newFixture(t)
	c := newClient(t, f.serve(t))
	ctx := context.Background()
	p := layout.Pod{Namespace: "ns", Name: "staged", UID: "u-1"}
	if err := c.CreatePod(ctx, p, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Stage(ctx, p, "config/app.yaml", []byte("a: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Stage(ctx, p, "secret/token", []byte("s3"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(f.root, p.Dir(), layout.Staged("secret/token")))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v %v", st, err)
	}
	if err := c.Stage(ctx, p, "../escape", []byte("x"), 0o644); err == nil {
		t.Fatal("escaping path accepted")
	}
	// One file goes; twice is no error; a link the job put in a staged
	// file's place goes, not what it points to.
	if err := c.UnstageFile(ctx, p, "config/app.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := c.UnstageFile(ctx, p, "config/app.yaml"); err != nil {
		t.Fatalf("again: %v", err)
	}
	if _, err := os.Stat(filepath.Join(f.root, p.Dir(), layout.Staged("config/app.yaml"))); !os.IsNotExist(err) {
		t.Fatalf("unstaged file still there: %v", err)
	}
	outside := filepath.Join(t.TempDir(), "precious")
	os.WriteFile(outside, []byte("keep"), 0o644)
	link := filepath.Join(f.root, p.Dir(), layout.Staged("secret/token"))
	os.Remove(link)
	if err := os.Symlink(outside, link); err != nil {
		t.Fatal(err)
	}
	if err := c.UnstageFile(ctx, p, "secret/token"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(link); !os.IsNotExist(err) {
		t.Errorf("the link is still there: %v", err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Errorf("what the link pointed to: %q %v", b, err)
	}
	if err := c.UnstageFile(ctx, p, "../escape"); err == nil {
		t.Fatal("escaping path accepted")
	}
	if err := c.DeletePod(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, p.Dir())); !os.IsNotExist(err) {
		t.Fatalf("pod directory still there: %v", err)
	}
}

// HTTP/1.1 still works, for endpoints behind proxies that only speak it.
func TestHTTP1Mode(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(f.logPath("main"), []byte("over http/1.1\n"), 0o644)
	f.exit(t, "main", 0)
	c := newClient(t, f.serve(t), func(c *Config) { c.HTTP1 = true })
	if got := readAll(t, c, LogOptions{TailLines: -1, Follow: true}); string(got) != "over http/1.1\n" {
		t.Fatalf("%q", got)
	}
}
