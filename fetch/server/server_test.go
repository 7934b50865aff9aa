package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch"
	"github.com/slurmkube/slurm-vk/fetch/layout"
)

const token = "s3cret-token"

var testPod = layout.Pod{Namespace: "default", Name: "hello", UID: "0b7c6e3a-1111-2222-3333-444455556666"}

// env is a server on a real directory with a sibling "outside" directory
// that no request may reach.
type env struct {
	t       testing.TB
	root    string
	outside string
	srv     *Server
	http    *httptest.Server
}

func newEnv(t testing.TB, mod ...func(*Config)) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{t: t, root: filepath.Join(base, "root"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{e.root, e.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(e.outside, "secret"), []byte("outside secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(base, "token")
	if err := os.WriteFile(tok, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Root: e.root, TokenFile: tok, PollInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = s
	e.http = httptest.NewServer(s)
	t.Cleanup(func() { e.http.Close(); s.Close() })
	return e
}

// raw sends a request with the path exactly as given (no cleaning).
func (e *env) raw(method, rawPath string, body []byte, auth bool) (int, http.Header, []byte) {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.http.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n", method, rawPath, len(body))
	if auth {
		fmt.Fprintf(conn, "Authorization: Bearer %s\r\n", token)
	}
	fmt.Fprintf(conn, "\r\n")
	conn.Write(body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, rawPath, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (e *env) do(method, path string, body []byte) (int, http.Header, []byte) {
	e.t.Helper()
	return e.raw(method, path, body, true)
}

func podURL(p layout.Pod) string { return "/v1/pods/" + p.Namespace + "/" + p.Name + "/" + p.UID }

func (e *env) writeLog(container string, attempt int, data string, exit *int) {
	e.t.Helper()
	e.writeLogOf(testPod, container, attempt, data, exit)
}

// writeLogOf writes an attempt's log, and its exit marker if exit is set,
// into pod's directory, as a job would.
func (e *env) writeLogOf(pod layout.Pod, container string, attempt int, data string, exit *int) {
	e.t.Helper()
	dir := filepath.Join(e.root, pod.Dir())
	if err := os.MkdirAll(filepath.Join(dir, container), 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, layout.LogFile(container, attempt)), []byte(data), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if exit != nil {
		if err := os.WriteFile(filepath.Join(dir, layout.ExitFile(container, attempt)), []byte(fmt.Sprintf("%d\n", *exit)), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}

func intp(i int) *int { return &i }

func TestTailOffset(t *testing.T) {
	tests := []struct {
		data string
		n    int64
		want string
	}{
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 10, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, ""},
		{"a\nb\nc", 1, "c"},
		{"a\nb\nc", 2, "b\nc"},
		{"", 5, ""},
		{"\n", 1, "\n"},
		{"\n\n\n", 2, "\n\n"},
		{"no newline at all", 1, "no newline at all"},
		{strings.Repeat("x", 200000) + "\n" + strings.Repeat("y", 100000) + "\n", 1, strings.Repeat("y", 100000) + "\n"},
		{strings.Repeat("line\n", 50000), 3, "line\nline\nline\n"},
	}
	for _, tt := range tests {
		off, err := TailOffset(context.Background(), strings.NewReader(tt.data), int64(len(tt.data)), tt.n)
		if err != nil {
			t.Fatal(err)
		}
		if got := tt.data[off:]; got != tt.want {
			t.Errorf("tail %d of %.20q... = %.20q..., want %.20q...", tt.n, tt.data, got, tt.want)
		}
	}
}

func TestReadLog(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 0, "hello\nworld\n", nil)
	base := podURL(testPod) + "/containers/main/log"

	code, h, body := e.do("GET", base+"?offset=6", nil)
	if code != 200 || string(body) != "world\n" || h.Get(fetch.HeaderNext) != "12" || h.Get(fetch.HeaderComplete) != "false" || h.Get(fetch.HeaderSize) != "12" {
		t.Fatalf("read: %d %q %v", code, body, h)
	}
	code, h, body = e.do("GET", base+"?offset=0&max=3", nil)
	if code != 200 || string(body) != "hel" || h.Get(fetch.HeaderNext) != "3" {
		t.Fatalf("max: %d %q %v", code, body, h)
	}
	e.writeLog("main", 0, "hello\nworld\n", intp(3))
	code, h, _ = e.do("GET", base+"?offset=6&max=3", nil)
	if h.Get(fetch.HeaderComplete) != "false" || h.Get(fetch.HeaderExitCode) != "3" {
		t.Fatalf("exited but bytes left must not be complete: %d %v", code, h)
	}
	_, h, body = e.do("GET", base+"?offset=12", nil)
	if h.Get(fetch.HeaderComplete) != "true" || len(body) != 0 {
		t.Fatalf("at the end: %v %q", h, body)
	}
	// A container that has not started writing yet: empty, not an error.
	code, h, body = e.do("GET", podURL(testPod)+"/containers/sidecar/log", nil)
	if code != 200 || len(body) != 0 || h.Get(fetch.HeaderComplete) != "false" {
		t.Fatalf("no log yet: %d %v %q", code, h, body)
	}
}

func TestLongPoll(t *testing.T) {
	// A ten-minute wait: answered in far less shows the data woke it,
	// however busy the machine (CI shares 2 cores with Slurm and the
	// control plane).
	e := newEnv(t, func(c *Config) { c.MaxWait = 10 * time.Minute })
	e.writeLog("main", 0, "first\n", nil)
	path := filepath.Join(e.root, testPod.Dir(), "main", "0.log")
	go func() {
		time.Sleep(150 * time.Millisecond)
		f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		f.WriteString("second\n")
		f.Close()
	}()
	start := time.Now()
	code, _, body := e.do("GET", podURL(testPod)+"/containers/main/log?offset=6&wait=600s", nil)
	if code != 200 || string(body) != "second\n" {
		t.Fatalf("%d %q", code, body)
	}
	// Answered when the data came, not when the wait ran out.
	if d := time.Since(start); d > 5*time.Minute {
		t.Errorf("long-poll returned after %v", d)
	}
	// Nothing comes: the wait expires with an empty answer.
	start = time.Now()
	code, h, body := e.do("GET", podURL(testPod)+"/containers/main/log?offset=13&wait=200ms", nil)
	if code != 200 || len(body) != 0 || h.Get(fetch.HeaderNext) != "13" || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("expired wait: %d %q %v after %v", code, body, h, time.Since(start))
	}
	// The exit marker ends a wait.
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(filepath.Join(e.root, testPod.Dir(), "main", "0.exit"), []byte("0\n"), 0o644)
	}()
	_, h, _ = e.do("GET", podURL(testPod)+"/containers/main/log?offset=13&wait=5s", nil)
	if h.Get(fetch.HeaderComplete) != "true" {
		t.Fatalf("exit marker: %v", h)
	}
}

func TestInfo(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 2, "a\nb\nc", intp(0))
	code, _, body := e.do("GET", podURL(testPod)+"/containers/main/info?attempt=2&tail_lines=2", nil)
	var info fetch.Info
	if code != 200 || json.Unmarshal(body, &info) != nil {
		t.Fatalf("%d %s", code, body)
	}
	if !info.Exists || info.Size != 5 || !info.Exited || *info.ExitCode != 0 || *info.TailOffset != 2 {
		t.Errorf("info = %s", body)
	}
	// The marker's mtime is when the container ended.
	ended := time.Date(2026, 11, 25, 10, 0, 0, 123000000, time.UTC)
	must(t, os.Chtimes(filepath.Join(e.root, testPod.Dir(), "main", "2.exit"), ended, ended))
	_, _, body = e.do("GET", podURL(testPod)+"/containers/main/info?attempt=2", nil)
	info = fetch.Info{}
	if json.Unmarshal(body, &info) != nil || info.ExitedAt == nil || !info.ExitedAt.Equal(ended) {
		t.Errorf("exitedAt: %s", body)
	}
	e.writeLog("main", 3, "running", nil)
	_, _, body = e.do("GET", podURL(testPod)+"/containers/main/info?attempt=3", nil)
	if strings.Contains(string(body), "exitedAt") {
		t.Errorf("exitedAt before the container ended: %s", body)
	}
}

// TestProbeFlags: a running attempt's probe files (the agent's) are
// reported; a link in their place, or an attempt that has ended, is not.
func TestProbeFlags(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 0, "running", nil)
	dir := filepath.Join(e.root, testPod.Dir())
	for _, f := range []string{layout.ReadyFile("main", 0), layout.StartedFile("main", 0)} {
		must(t, os.WriteFile(filepath.Join(dir, f), nil, 0o644))
	}
	must(t, os.Symlink(filepath.Base(layout.ReadyFile("main", 0)), filepath.Join(dir, layout.PostStartFile("main", 0)))) // to a flag that exists
	info := func(attempt int) fetch.Info {
		_, _, body := e.do("GET", podURL(testPod)+"/containers/main/info?attempt="+strconv.Itoa(attempt), nil)
		var i fetch.Info
		if err := json.Unmarshal(body, &i); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		return i
	}
	if i := info(0); !i.Ready || !i.Started || i.PostStarted {
		t.Errorf("ready %v started %v postStarted %v, want true, true and false (a link is not the agent's flag)", i.Ready, i.Started, i.PostStarted)
	}
	must(t, os.WriteFile(filepath.Join(dir, layout.ExitFile("main", 0)), []byte("0\n"), 0o644))
	if i := info(0); i.Ready || i.Started {
		t.Errorf("an ended attempt: ready %v started %v", i.Ready, i.Started)
	}
}

// TestConfinement: nothing outside the root is ever read or written, and
// every refusal is a 4xx with a reason.
func TestConfinement(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 0, "inside\n", nil)
	podDir := filepath.Join(e.root, testPod.Dir())
	// A job (same user as everyone) plants symlinks pointing outside.
	must(t, os.Symlink(filepath.Join(e.outside, "secret"), filepath.Join(podDir, "main", "1.log")))
	must(t, os.Symlink(e.outside, filepath.Join(podDir, "evil")))
	must(t, os.Symlink(e.outside, filepath.Join(podDir, layout.StagedDir)))
	escaped := layout.Pod{Namespace: "default", Name: "escaped", UID: "abc"}
	must(t, os.Symlink(e.outside, filepath.Join(e.root, escaped.Dir())))

	pod := podURL(testPod)
	tests := []struct {
		method, path string
		body         string
		want         int
	}{
		{"GET", pod + "/containers/../../../outside/secret/log", "", 400},
		{"GET", "/v1/pods/default/hello/..%2F..%2Foutside/containers/main/log", "", 400},
		{"GET", "/v1/pods/%2e%2e/hello/x/containers/main/log", "", 400},
		{"GET", pod + "/containers/%2e%2e/log", "", 400},
		{"GET", pod + "/containers/main%2F..%2F..%2Fevil/log", "", 400},
		{"GET", pod + "/containers/main/log?attempt=../1", "", 400},
		{"GET", pod + "/containers/main/log?attempt=-1", "", 400},
		{"GET", pod + "/containers/main/log?attempt=1", "", 403}, // 1.log is a symlink out
		{"GET", pod + "/containers/main/info?attempt=1&tail_lines=1", "", 403},
		{"GET", podURL(escaped) + "/containers/main/log", "", 403},
		{"GET", "/v1/pods/Default/hello/x/containers/main/log", "", 400},
		{"GET", "/v1/pods/default/hel_lo/x/containers/main/log", "", 400},
		{"PUT", pod + "/files/../../outside/planted", "x", 400},
		{"PUT", pod + "/files/%2e%2e/%2e%2e/outside/planted", "x", 400},
		{"PUT", pod + "/files//etc/planted", "x", 400},
		{"PUT", pod + "/files/a/./b", "x", 400},
		{"PUT", pod + "/files/planted", "x", 403}, // _staged is a symlink out
		{"PUT", podURL(escaped) + "/files/planted", "x", 403},
		{"PUT", pod + "/files/x?mode=4755", "x", 400},
		{"PUT", pod + "/files/x?mode=rw", "x", 400},
		{"DELETE", "/v1/pods/default/hello/..", "", 400},
	}
	for _, tt := range tests {
		code, _, body := e.do(tt.method, tt.path, []byte(tt.body))
		var eb errorBody
		if code != tt.want || json.Unmarshal(body, &eb) != nil || eb.Error == "" {
			t.Errorf("%s %s = %d %s, want %d with a reason", tt.method, tt.path, code, body, tt.want)
		}
	}
	assertOutsideUntouched(t, e)
	if b, err := os.ReadFile(filepath.Join(e.outside, "secret")); err != nil || string(b) != "outside secret\n" {
		t.Fatalf("outside secret changed: %q %v", b, err)
	}
}

// assertOutsideUntouched checks that the outside directory holds only its
// secret.
func assertOutsideUntouched(t *testing.T, e *env) {
	t.Helper()
	entries, err := os.ReadDir(e.outside)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "secret" {
		var names []string
		for _, en := range entries {
			names = append(names, en.Name())
		}
		t.Fatalf("outside directory now holds %v", names)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 0, "x", nil)
	path := podURL(testPod) + "/containers/main/log"
	if code, h, _ := e.raw("GET", path, nil, false); code != 401 || h.Get("WWW-Authenticate") == "" {
		t.Errorf("no token: %d", code)
	}
	req, _ := http.NewRequest("GET", e.http.URL+path, nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 401 {
		t.Errorf("wrong token: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	// Health needs no token; everything else does.
	if code, _, _ := e.raw("GET", "/healthz", nil, false); code != 200 {
		t.Errorf("healthz: %d", code)
	}
}

func TestBadRanges(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 0, "0123456789", nil)
	path := podURL(testPod) + "/containers/main/log"
	for q, want := range map[string]int{
		"?offset=11":     416,
		"?offset=-1":     400,
		"?offset=x":      400,
		"?max=0":         400,
		"?max=-5":        400,
		"?wait=forever":  400,
		"?wait=-1s":      400,
		"?offset=10":     200,
		"?offset=99e999": 400,
	} {
		if code, _, body := e.do("GET", path+q, nil); code != want {
			t.Errorf("%s: %d %s, want %d", q, code, body, want)
		}
	}
}

func TestStaging(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxUpload = 1024 })
	pod := podURL(testPod)
	if code, _, body := e.do("PUT", pod, nil); code != 204 {
		t.Fatalf("create pod: %d %s", code, body)
	}
	if code, _, body := e.do("PUT", pod+"/files/secret/password?mode=0600", []byte("hunter2")); code != 204 {
		t.Fatalf("stage: %d %s", code, body)
	}
	p := filepath.Join(e.root, testPod.Dir(), layout.StagedDir, "secret", "password")
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("staged file: %v %v", st, err)
	}
	if b, _ := os.ReadFile(p); string(b) != "hunter2" {
		t.Fatalf("content %q", b)
	}
	// Replaced atomically, mode follows the new request.
	if code, _, _ := e.do("PUT", pod+"/files/secret/password?mode=0640", []byte("new")); code != 204 {
		t.Fatal(code)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", st.Mode())
	}
	// Too big: refused, and no temporary file left behind.
	code, _, body := e.do("PUT", pod+"/files/big", bytes.Repeat([]byte("x"), 2048))
	if code != 413 {
		t.Fatalf("oversized: %d %s", code, body)
	}
	entries, _ := os.ReadDir(filepath.Join(e.root, testPod.Dir(), layout.StagedDir))
	for _, en := range entries {
		if en.Name() != "secret" {
			t.Errorf("left behind: %s", en.Name())
		}
	}
	// Staging into a pod directory that was never created.
	other := layout.Pod{Namespace: "default", Name: "other", UID: "u1"}
	if code, _, _ := e.do("PUT", podURL(other)+"/files/x", []byte("x")); code != 404 {
		t.Errorf("unknown pod: %d", code)
	}
}

func TestDeleteAndRetention(t *testing.T) {
	e := newEnv(t)
	e.do("PUT", podURL(testPod), nil)
	if code, _, _ := e.do("DELETE", podURL(testPod), nil); code != 204 {
		t.Fatal(code)
	}
	if _, err := os.Stat(filepath.Join(e.root, testPod.Dir())); !os.IsNotExist(err) {
		t.Fatalf("not removed: %v", err)
	}
	if code, _, _ := e.do("DELETE", podURL(testPod), nil); code != 204 {
		t.Fatalf("second delete: %d", code)
	}

	// With a retention the output stays, the Secrets and scratch go.
	r := newEnv(t, func(c *Config) { c.Retention = time.Hour })
	r.do("PUT", podURL(testPod), nil)
	if code, _, body := r.do("PUT", podURL(testPod)+"/files/secret/password?mode=0600", []byte("hunter2")); code != 204 {
		t.Fatalf("stage: %d %s", code, body)
	}
	r.writeLog("main", 0, "output\n", intp(0))
	if code, _, _ := r.do("DELETE", podURL(testPod), nil); code != 204 {
		t.Fatal(code)
	}
	dir := filepath.Join(r.root, testPod.Dir())
	r.srv.Sweep(time.Now())
	if _, err := os.Stat(filepath.Join(dir, "main", "0.log")); err != nil {
		t.Fatalf("output removed before its retention: %v", err)
	}
	for _, d := range []string{layout.StagedDir, layout.WorkDir} {
		if _, err := os.Stat(filepath.Join(dir, d)); !os.IsNotExist(err) {
			t.Errorf("%s kept after the pod's delete: %v", d, err)
		}
	}
	r.srv.Sweep(time.Now().Add(2 * time.Hour))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("kept after its retention: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	e := newEnv(t)
	e.writeLog("main", 0, "12345", nil)
	e.do("GET", podURL(testPod)+"/containers/main/log", nil)
	_, _, body := e.raw("GET", "/metrics", nil, false)
	for _, want := range []string{
		`slurm_fetchd_requests_total{code="200",handler="log"} 1`,
		"slurm_fetchd_log_bytes_served_total 5",
		"slurm_fetchd_active_long_polls 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// FuzzRequest throws arbitrary methods, paths and bodies at the server and
// checks that it never panics, never answers 5xx, and never reads or writes
// outside the root.
func FuzzRequest(f *testing.F) {
	for _, s := range []string{
		"/v1/pods/default/hello/uid/containers/main/log?offset=0",
		"/v1/pods/default/hello/uid/files/a/b/c?mode=0600",
		"/v1/pods/default/hello/uid/files/../../../outside/x",
		"/v1/pods/default/hello/uid/containers/..%2f..%2foutside/log",
		"/v1/pods/default/hello/uid/containers/main/info?tail_lines=3",
		"/v1/pods/%2e%2e/%2e%2e/uid",
		"//v1/pods/default/hello/uid/files//x",
	} {
		f.Add("GET", s, []byte(""))
		f.Add("PUT", s, []byte("data"))
	}
	// Fuzzed wait parameters must not stall the fuzzer.
	e := newEnv(f, func(c *Config) { c.MaxWait = 5 * time.Millisecond })
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		if method != "GET" && method != "PUT" && method != "DELETE" {
			method = "GET"
		}
		req, err := http.NewRequest(method, "http://x/", bytes.NewReader(body))
		if err != nil || !strings.HasPrefix(target, "/") {
			return
		}
		u, err := req.URL.Parse(target)
		if err != nil {
			return
		}
		req.URL = u
		req.Header.Set("Authorization", "Bearer "+token)
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body)
		}
		entries, err := os.ReadDir(e.outside)
		if err != nil || len(entries) != 1 {
			t.Fatalf("%s %s wrote outside the root", method, target)
		}
		filepath.WalkDir(filepath.Dir(e.root), func(p string, d fs.DirEntry, err error) error {
			if p != e.root && p != e.outside && !strings.HasPrefix(p, e.root+"/") && !strings.HasPrefix(p, e.outside+"/") && p != filepath.Dir(e.root) && !strings.HasSuffix(p, "/token") {
				t.Fatalf("%s %s created %s", method, target, p)
			}
			return nil
		})
	})
}

// TestUnstage: the staged files go, the output stays; idempotent, also for
// a pod directory that is gone.
func TestUnstage(t *testing.T) {
	e := newEnv(t)
	e.do("PUT", podURL(testPod), nil)
	e.do("PUT", podURL(testPod)+"/files/secret/password?mode=0600", []byte("hunter2"))
	e.writeLog("main", 0, "output\n", intp(0))
	for i := 0; i < 2; i++ {
		if code, _, body := e.do("DELETE", podURL(testPod)+"/files", nil); code != 204 {
			t.Fatalf("unstage: %d %s", code, body)
		}
	}
	dir := filepath.Join(e.root, testPod.Dir())
	if _, err := os.Stat(filepath.Join(dir, layout.StagedDir)); !os.IsNotExist(err) {
		t.Errorf("staged files kept: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "main", "0.log")); err != nil || string(b) != "output\n" {
		t.Errorf("output: %q %v", b, err)
	}
	gone := testPod
	gone.UID = "0b7c6e3a-0000-2222-3333-444455556666"
	if code, _, body := e.do("DELETE", podURL(gone)+"/files", nil); code != 204 {
		t.Errorf("unstage of a pod that is gone: %d %s", code, body)
	}
}

// TestJanitorLoop: the janitor removes a deleted pod's directory once its
// retention is over, leaves the others, and returns when its context ends.
func TestJanitorLoop(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Retention = time.Hour })
	old, live := testPod, testPod
	old.UID, live.UID = "0b7c6e3a-aaaa-2222-3333-444455556666", "0b7c6e3a-bbbb-2222-3333-444455556666"
	for _, p := range []layout.Pod{old, live} {
		if code, _, body := e.do("PUT", podURL(p), nil); code != 204 {
			t.Fatalf("create: %d %s", code, body)
		}
	}
	if code, _, _ := e.do("DELETE", podURL(old), nil); code != 204 {
		t.Fatal(code)
	}
	past := time.Now().Add(-2 * time.Hour)
	os.Chtimes(filepath.Join(e.root, old.Dir(), layout.DeletedMarker), past, past)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.srv.Janitor(ctx, 10*time.Millisecond); close(done) }()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(e.root, old.Dir())); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the janitor never removed the expired directory")
		}
	}
	if _, err := os.Stat(filepath.Join(e.root, live.Dir())); err != nil {
		t.Errorf("the live pod's directory: %v", err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the janitor did not return when its context ended")
	}
}
