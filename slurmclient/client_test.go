package slurmclient

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// golden is one captured slurmrestd answer (hack/capture-testdata.sh).
type golden struct {
	status int
	body   []byte
}

func load(t *testing.T, version, name string) golden {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join("testdata", version, name+".*.json"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("golden %s/%s: %v %v", version, name, matches, err)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	var status int
	if _, err := fmt.Sscanf(strings.TrimSuffix(filepath.Base(matches[0]), ".json")[len(name)+1:], "%d", &status); err != nil {
		t.Fatal(err)
	}
	return golden{status: status, body: b}
}

func (g golden) serve(w http.ResponseWriter) {
	if json.Valid(g.body) {
		w.Header().Set("Content-Type", "application/json")
	} else {
		w.Header().Set("Content-Type", "text/plain")
	}
	w.WriteHeader(g.status)
	w.Write(g.body)
}

// replay serves goldens by "METHOD /path" (path without the version
// prefix); /ping/ of the version is always served so negotiation works.
type replay struct {
	t       *testing.T
	version string
	routes  map[string]golden
	reqs    []*http.Request
}

func newReplay(t *testing.T, version string, routes map[string]string) *replay {
	r := &replay{t: t, version: version, routes: map[string]golden{}}
	for k, name := range routes {
		r.routes[k] = load(t, version, name)
	}
	if _, ok := r.routes["GET /ping/"]; !ok {
		r.routes["GET /ping/"] = load(t, version, "ping")
	}
	return r
}

func (r *replay) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.reqs = append(r.reqs, req)
	prefix := "/slurm/" + r.version
	if !strings.HasPrefix(req.URL.Path, prefix+"/") {
		http.NotFound(w, req)
		return
	}
	key := req.Method + " " + strings.TrimPrefix(req.URL.Path, prefix)
	g, ok := r.routes[key]
	if !ok {
		r.t.Errorf("unexpected request %s", key)
		http.Error(w, "no golden", http.StatusTeapot)
		return
	}
	g.serve(w)
}

func writeToken(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newTestClient(t *testing.T, url string, mod ...func(*Config)) *Client {
	t.Helper()
	cfg := Config{URL: url, User: "jobuser", TokenFile: writeToken(t, "first-jwt"), RetryFor: 2 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var versions = []string{"v0.0.42", "v0.0.45"}

func TestGoldenCalls(t *testing.T) {
	ctx := context.Background()
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			tests := []struct {
				name    string
				routes  map[string]string
				call    func(c *Client) (any, error)
				check   func(t *testing.T, got any)
				wantErr error
				wantMsg string
			}{
				{
					name:   "ping",
					routes: map[string]string{"GET /diag/": "diag"},
					call:   func(c *Client) (any, error) { return c.Ping(ctx) },
					check: func(t *testing.T, got any) {
						info := got.(ServerInfo)
						if info.APIVersion != v || !strings.Contains("24.11 26.05", info.SlurmVersion[:5]) || info.Cluster == "" {
							t.Errorf("ping = %+v", info)
						}
					},
				},
				{
					name:    "ping with a bad token",
					routes:  map[string]string{"GET /diag/": "diag-bad-token"},
					call:    func(c *Client) (any, error) { return c.Ping(ctx) },
					wantErr: ErrUnauthenticated,
					wantMsg: "Protocol authentication error",
				},
				{
					name:    "ping without a token",
					routes:  map[string]string{"GET /diag/": "diag-no-token"},
					call:    func(c *Client) (any, error) { return c.Ping(ctx) },
					wantErr: ErrUnauthenticated,
				},
				{
					name:   "submit",
					routes: map[string]string{"POST /job/submit": "submit-ok"},
					call:   func(c *Client) (any, error) { return c.Submit(ctx, JobSpec{Script: "#!/bin/sh\n"}) },
					check: func(t *testing.T, got any) {
						if got.(JobID) == 0 {
							t.Error("job ID 0")
						}
					},
				},
				{
					name:    "submit to an unknown partition",
					routes:  map[string]string{"POST /job/submit": "submit-bad-partition"},
					call:    func(c *Client) (any, error) { return c.Submit(ctx, JobSpec{Script: "#!/bin/sh\n"}) },
					wantErr: ErrRejected,
					wantMsg: "Invalid partition name specified",
				},
				{
					name:    "submit with impossible memory",
					routes:  map[string]string{"POST /job/submit": "submit-impossible-memory"},
					call:    func(c *Client) (any, error) { return c.Submit(ctx, JobSpec{Script: "#!/bin/sh\n"}) },
					wantErr: ErrRejected,
					wantMsg: "Requested node configuration is not available",
				},
				{
					name:    "submit a malformed body",
					routes:  map[string]string{"POST /job/submit": "submit-malformed"},
					call:    func(c *Client) (any, error) { return c.Submit(ctx, JobSpec{Script: "#!/bin/sh\n"}) },
					wantErr: ErrRejected,
				},
				{
					name:   "job that exited 3",
					routes: map[string]string{"GET /job/{id}": "job-completed"},
					call:   func(c *Client) (any, error) { return c.Job(ctx, goldenJobID(t, v, "job-completed")) },
					check: func(t *testing.T, got any) {
						j := got.(*Job)
						if j.State != "FAILED" || !j.ExitCode.Set || j.ExitCode.ReturnCode != 3 || j.StateReason != "NonZeroExitCode" {
							t.Errorf("job = %+v", j)
						}
						if j.StartTime.IsZero() || j.EndTime.Before(j.StartTime) || j.SubmitTime.IsZero() {
							t.Errorf("times: submit %v start %v end %v", j.SubmitTime, j.StartTime, j.EndTime)
						}
						want := fmt.Sprintf("/%d.out", j.ID)
						if !strings.HasSuffix(j.Stdout, want) || j.Comment == "" || j.Name != "capture" {
							t.Errorf("stdout %q (want suffix %q), comment %q, name %q", j.Stdout, want, j.Comment, j.Name)
						}
					},
				},
				{
					name:   "held job",
					routes: map[string]string{"GET /job/{id}": "job-held"},
					call:   func(c *Client) (any, error) { return c.Job(ctx, goldenJobID(t, v, "job-held")) },
					check: func(t *testing.T, got any) {
						j := got.(*Job)
						if j.State != "PENDING" || j.StateReason != "JobHeldUser" || j.ExitCode.Set || !j.StartTime.IsZero() {
							t.Errorf("job = %+v", j)
						}
					},
				},
				{
					name:   "job waiting for resources",
					routes: map[string]string{"GET /job/{id}": "job-pending-resources"},
					call:   func(c *Client) (any, error) { return c.Job(ctx, goldenJobID(t, v, "job-pending-resources")) },
					check: func(t *testing.T, got any) {
						if j := got.(*Job); j.State != "PENDING" || j.StateReason != "Resources" {
							t.Errorf("job = %+v", j)
						}
					},
				},
				{
					name:   "running job",
					routes: map[string]string{"GET /job/{id}": "job-running"},
					call:   func(c *Client) (any, error) { return c.Job(ctx, goldenJobID(t, v, "job-running")) },
					check: func(t *testing.T, got any) {
						if j := got.(*Job); j.State != "RUNNING" || j.StateReason != "" || j.StartTime.IsZero() || j.Nodes == "" || j.ExitCode.Set { // Slurm says "None"
							t.Errorf("job = %+v", j)
						}
					},
				},
				{
					name:    "unknown job",
					routes:  map[string]string{"GET /job/{id}": "job-unknown"},
					call:    func(c *Client) (any, error) { return c.Job(ctx, 999999) },
					wantErr: ErrNotFound,
					wantMsg: "Invalid job id specified",
				},
				{
					name:   "job states",
					routes: map[string]string{"GET /jobs/state/": "jobs-state"},
					call:   func(c *Client) (any, error) { return c.JobStates(ctx, []JobID{1, 2, 999999}) },
					check: func(t *testing.T, got any) {
						st := got.([]JobStatus)
						if len(st) != 3 {
							t.Fatalf("states = %+v, want the 3 known of 4 asked in the capture", st)
						}
						seen := map[JobState]bool{}
						for _, s := range st {
							seen[s.State] = true
						}
						if !seen["FAILED"] || !seen["PENDING"] || !seen["RUNNING"] {
							t.Errorf("states = %+v", st)
						}
					},
				},
				{
					name:   "cancel a running job",
					routes: map[string]string{"DELETE /job/{id}": "cancel-running"},
					call:   func(c *Client) (any, error) { return nil, c.Cancel(ctx, 12) },
				},
				{
					name:    "cancel an unknown job (200 with 2017 in status)",
					routes:  map[string]string{"DELETE /job/{id}": "cancel-unknown"},
					call:    func(c *Client) (any, error) { return nil, c.Cancel(ctx, 999999) },
					wantErr: ErrNotFound,
				},
				{
					name:   "nodes",
					routes: map[string]string{"GET /nodes/": "nodes"},
					call:   func(c *Client) (any, error) { return c.Nodes(ctx) },
					check: func(t *testing.T, got any) {
						n := got.([]Node)
						if len(n) != 1 || n[0].Name != "localhost" || n[0].CPUs != 4 || n[0].MemoryMB != 8192 || len(n[0].State) == 0 || n[0].Partitions[0] != "debug" {
							t.Errorf("nodes = %+v", n)
						}
					},
				},
				{
					name:   "partitions",
					routes: map[string]string{"GET /partitions/": "partitions"},
					call:   func(c *Client) (any, error) { return c.Partitions(ctx) },
					check: func(t *testing.T, got any) {
						p := got.([]Partition)
						if len(p) != 1 || p[0].Name != "debug" || p[0].TotalCPUs != 4 || p[0].TotalNodes != 1 || p[0].Nodes != "localhost" {
							t.Errorf("partitions = %+v", p)
						}
					},
				},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					routes := map[string]string{}
					for k, name := range tt.routes {
						routes[k] = name
					}
					r := newReplay(t, v, nil)
					for k, name := range routes {
						g := load(t, v, name)
						if strings.Contains(k, "{id}") {
							r.routes[strings.Replace(k, "{id}", idFromCall(t, v, name), 1)] = g
						} else {
							r.routes[k] = g
						}
					}
					srv := httptest.NewServer(r)
					defer srv.Close()
					c := newTestClient(t, srv.URL)
					got, err := tt.call(c)
					if tt.wantErr != nil {
						if !errors.Is(err, tt.wantErr) {
							t.Fatalf("err = %v, want %v", err, tt.wantErr)
						}
						var se *Error
						if !errors.As(err, &se) || !strings.Contains(se.Message(), tt.wantMsg) {
							t.Fatalf("err = %v, want Slurm's message %q", err, tt.wantMsg)
						}
						return
					}
					if err != nil {
						t.Fatalf("err = %v", err)
					}
					if c.APIVersion() != v {
						t.Errorf("negotiated %q, want %q", c.APIVersion(), v)
					}
					if tt.check != nil {
						tt.check(t, got)
					}
				})
			}
		})
	}
}

// goldenJobID is the job ID inside a captured GET /job answer.
func goldenJobID(t *testing.T, version, name string) JobID {
	t.Helper()
	var body struct {
		Jobs []struct {
			JobID JobID `json:"job_id"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(load(t, version, name).body, &body); err != nil || len(body.Jobs) != 1 {
		t.Fatalf("golden %s: %v", name, err)
	}
	return body.Jobs[0].JobID
}

// idFromCall is the job ID path segment the test's call will use.
func idFromCall(t *testing.T, version, name string) string {
	switch {
	case strings.HasPrefix(name, "job-unknown"), name == "cancel-unknown":
		return "999999"
	case name == "cancel-running":
		return "12"
	}
	return fmt.Sprint(goldenJobID(t, version, name))
}

func TestJobStatesRepeatsTheParameter(t *testing.T) {
	r := newReplay(t, "v0.0.42", map[string]string{"GET /jobs/state/": "jobs-state"})
	srv := httptest.NewServer(r)
	defer srv.Close()
	if _, err := newTestClient(t, srv.URL).JobStates(context.Background(), []JobID{7, 8, 9}); err != nil {
		t.Fatal(err)
	}
	last := r.reqs[len(r.reqs)-1]
	if got := last.URL.Query()["job_id"]; strings.Join(got, ",") != "7,8,9" {
		t.Errorf("job_id params = %q (raw %q), want 7, 8, 9 repeated", got, last.URL.RawQuery)
	}
}

func TestSubmitRequestBody(t *testing.T) {
	r := newReplay(t, "v0.0.42", map[string]string{"POST /job/submit": "submit-ok"})
	var body map[string]map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
				t.Error(err)
			}
		}
		r.ServeHTTP(w, req)
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv.URL).Submit(context.Background(), JobSpec{
		Script: "#!/bin/sh\necho hi\n", Name: "n", Comment: "c", WorkDir: "/w", Env: []string{"A=1"},
		Stdout: "/w/out", Partition: "p", Account: "a", QOS: "q", Reservation: "r", Constraints: "x",
		CPUsPerTask: 3, MemoryMB: 1500, Gres: "gpu:2", TimeLimit: 61 * time.Second, Hold: true,
		Extra: map[string]any{"nice": 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	job := body["job"]
	want := map[string]any{
		"script": "#!/bin/sh\necho hi\n", "name": "n", "comment": "c", "current_working_directory": "/w",
		"standard_output": "/w/out", "partition": "p", "account": "a", "qos": "q", "reservation": "r",
		"constraints": "x", "cpus_per_task": 3.0, "tres_per_node": "gres/gpu:2", "hold": true, "nice": 5.0,
	}
	for k, v := range want {
		if job[k] != v {
			t.Errorf("%s = %#v, want %#v", k, job[k], v)
		}
	}
	if got := fmt.Sprint(job["memory_per_node"]); got != "map[number:1500 set:true]" {
		t.Errorf("memory_per_node = %s", got)
	}
	if got := fmt.Sprint(job["time_limit"]); got != "map[number:2 set:true]" {
		t.Errorf("time_limit = %s (61s rounds up to 2 minutes)", got)
	}
	if _, ok := job["standard_error"]; ok {
		t.Error("empty stderr sent")
	}
}

func TestSubmitRefusesUnknownExtraField(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			calls.Add(1)
		}
		w.WriteHeader(http.StatusOK) // ping
	}))
	defer srv.Close()
	_, err := newTestClient(t, srv.URL, func(c *Config) { c.APIVersion = "v0.0.42" }).
		Submit(context.Background(), JobSpec{Script: "#!/bin/sh\n", Extra: map[string]any{"nicee": 5}})
	if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), `"nicee"`) {
		t.Fatalf("err = %v, want rejected naming the field", err)
	}
	if calls.Load() != 0 {
		t.Fatal("a request was sent")
	}
}

func TestNegotiation(t *testing.T) {
	serving := func(versions ...string) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.URL.Path == "/openapi/v3" {
				paths := map[string]any{}
				for _, v := range versions {
					paths["/slurm/"+v+"/ping/"] = map[string]any{}
				}
				json.NewEncoder(w).Encode(map[string]any{"paths": paths})
				return
			}
			for _, v := range versions {
				if strings.HasPrefix(req.URL.Path, "/slurm/"+v+"/") {
					w.WriteHeader(http.StatusOK)
					return
				}
			}
			http.NotFound(w, req)
		}))
	}
	tests := []struct {
		name     string
		served   []string
		override string
		want     string
		wantErr  string
	}{
		{name: "24.11", served: []string{"v0.0.40", "v0.0.41", "v0.0.42"}, want: "v0.0.42"},
		{name: "26.05", served: []string{"v0.0.42", "v0.0.43", "v0.0.44", "v0.0.45"}, want: "v0.0.45"},
		{name: "override", served: []string{"v0.0.42", "v0.0.45"}, override: "v0.0.42", want: "v0.0.42"},
		{name: "too old", served: []string{"v0.0.39", "v0.0.40"}, wantErr: "slurmrestd serves v0.0.39, v0.0.40; this client speaks v0.0.45, v0.0.42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := serving(tt.served...)
			defer srv.Close()
			c := newTestClient(t, srv.URL, func(c *Config) { c.APIVersion = tt.override; c.RetryFor = time.Millisecond })
			_, err := c.backendFor(context.Background())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || c.APIVersion() != tt.want {
				t.Fatalf("version %q, err %v; want %q", c.APIVersion(), err, tt.want)
			}
		})
	}
	if _, err := New(Config{URL: "http://x", TokenFile: "t", APIVersion: "v0.0.41"}); err == nil || !strings.Contains(err.Error(), "v0.0.45, v0.0.42") {
		t.Errorf("unsupported override: err = %v", err)
	}
}

func TestTokenRotation(t *testing.T) {
	diag := load(t, "v0.0.42", "diag")
	badToken := load(t, "v0.0.42", "diag-bad-token")
	var good atomic.Value
	good.Store("second-jwt")
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/ping/") {
			w.WriteHeader(http.StatusOK)
			return
		}
		tok := req.Header.Get("X-SLURM-USER-TOKEN")
		seen = append(seen, tok)
		if tok != good.Load() {
			badToken.serve(w)
			return
		}
		diag.serve(w)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(c *Config) { c.APIVersion = "v0.0.42" })
	if _, err := c.Ping(context.Background()); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("with the wrong token: err = %v", err)
	}
	// Rotate: the file changes, the next call picks it up without a restart.
	if err := os.WriteFile(c.cfg.TokenFile, []byte("second-jwt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	st, err := os.Stat(c.cfg.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	secondMtime := st.ModTime()
	// The server moves on first; a 511 makes the client re-read the file.
	good.Store("third-jwtx")
	c.http.Transport.(*authTransport).tokens.Get(false) // cache "second-jwt"
	if err := os.WriteFile(c.cfg.TokenFile, []byte("third-jwtx"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Same size and mtime as before: only the server's 511 can reveal the change.
	os.Chtimes(c.cfg.TokenFile, time.Time{}, secondMtime)
	if _, err := c.Ping(context.Background()); err != nil {
		t.Fatalf("after a 511: %v", err)
	}
	if got := strings.Join(seen, " "); !strings.HasSuffix(got, "second-jwt third-jwtx") {
		t.Errorf("tokens sent: %s", got)
	}
	for _, tok := range seen {
		if strings.Contains(fmt.Sprint(c), tok) {
			t.Errorf("the client's printed form shows token %q", tok)
		}
	}
}

func TestReadsRetryWhileUnavailable(t *testing.T) {
	job := load(t, "v0.0.42", "job-running")
	id := goldenJobID(t, "v0.0.42", "job-running")
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/ping/") {
			return
		}
		if calls.Add(1) <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		job.serve(w)
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(c *Config) { c.APIVersion = "v0.0.42" })
	if _, err := c.Job(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 3 {
		t.Errorf("%d calls, want 3", calls.Load())
	}

	// Rejections are final: no retry.
	calls.Store(0)
	bad := load(t, "v0.0.42", "job-unknown")
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls.Add(1)
		bad.serve(w)
	}))
	defer srv2.Close()
	c2 := newTestClient(t, srv2.URL, func(c *Config) { c.APIVersion = "v0.0.42" })
	if _, err := c2.Job(context.Background(), 999999); !errors.Is(err, ErrNotFound) || calls.Load() != 1 {
		t.Errorf("err %v after %d calls; want not found after 1", err, calls.Load())
	}
}

// A submit whose answer is lost is reported as such, and never repeated.
func TestSubmitWithUnknownOutcome(t *testing.T) {
	var posts, lists atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == http.MethodPost:
			posts.Add(1)
			// Drop the connection without an answer.
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		case strings.HasSuffix(req.URL.Path, "/jobs/"):
			lists.Add(1)
		}
	}))
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(c *Config) { c.APIVersion = "v0.0.42" })
	_, err := c.Submit(context.Background(), JobSpec{Script: "#!/bin/sh\n", Comment: "pod-uid-1"})
	// The job may exist: the caller must be told so, and nothing may be
	// submitted again here (the provider looks for the job by its comment).
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err %v, want ErrOutcomeUnknown and ErrUnavailable", err)
	}
	if posts.Load() != 1 || lists.Load() != 0 {
		t.Errorf("%d submits and %d job lists, want 1 and 0", posts.Load(), lists.Load())
	}

	// Slurm's own refusal is a known outcome.
	r := newReplay(t, "v0.0.42", map[string]string{"POST /job/submit": "submit-bad-partition"})
	srv2 := httptest.NewServer(r)
	defer srv2.Close()
	_, err = newTestClient(t, srv2.URL).Submit(context.Background(), JobSpec{Script: "#!/bin/sh\n", Comment: "pod-uid-1"})
	if !errors.Is(err, ErrRejected) || errors.Is(err, ErrOutcomeUnknown) {
		t.Errorf("refused submit: %v, want ErrRejected and a known outcome", err)
	}
}

func TestUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "slurmrestd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(newReplay(t, "v0.0.45", map[string]string{"GET /diag/": "diag"}))
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	info, err := newTestClient(t, "unix:"+sock).Ping(context.Background())
	if err != nil || info.APIVersion != "v0.0.45" {
		t.Fatalf("info %+v, err %v", info, err)
	}
}

func TestHTTPSWithCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(newReplay(t, "v0.0.42", map[string]string{"GET /diag/": "diag"}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pemCert(srv.Certificate().Raw), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newTestClient(t, srv.URL, func(c *Config) { c.CAFile = ca }).Ping(context.Background()); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	_, err := newTestClient(t, srv.URL, func(c *Config) { c.RetryFor = time.Millisecond }).Ping(context.Background())
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("without the CA: err = %v, want unavailable (unknown authority)", err)
	}
}

func TestExpandPattern(t *testing.T) {
	j := &Job{ID: 42, Name: "pod", UserName: "u"}
	for in, want := range map[string]string{
		"/s/%j.out":      "/s/42.out",
		"/s/%x-%A-%u.%%": "/s/pod-42-u.%",
		"/s/%N.out":      "/s/%N.out",
		"/s/plain":       "/s/plain",
		"/s/trailing%":   "/s/trailing%",
	} {
		if got := expandPattern(in, j); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestJobStatesInChunks(t *testing.T) {
	r := newReplay(t, "v0.0.42", map[string]string{"GET /jobs/state/": "jobs-state"})
	srv := httptest.NewServer(r)
	defer srv.Close()
	c := newTestClient(t, srv.URL, func(c *Config) { c.MaxIDsPerRequest = 2 })
	if _, err := c.JobStates(context.Background(), []JobID{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, req := range r.reqs {
		if strings.Contains(req.URL.Path, "jobs/state") {
			got = append(got, strings.Join(req.URL.Query()["job_id"], ","))
		}
	}
	if strings.Join(got, " ") != "1,2 3,4 5" {
		t.Errorf("requests asked for %q, want 1,2 then 3,4 then 5", got)
	}
}

// TestObserve: every call is reported once, after its retries, with its
// operation and its error (the provider's metrics hang off this hook).
func TestObserve(t *testing.T) {
	r := newReplay(t, "v0.0.42", map[string]string{"GET /jobs/state/": "jobs-state", "GET /job/999999": "job-unknown"})
	srv := httptest.NewServer(r)
	defer srv.Close()
	type call struct {
		op  string
		err error
	}
	var got []call
	c := newTestClient(t, srv.URL, func(cfg *Config) {
		cfg.Observe = func(op string, elapsed time.Duration, err error) {
			if elapsed <= 0 {
				t.Errorf("%s took %v", op, elapsed)
			}
			got = append(got, call{op, err})
		}
	})
	ctx := context.Background()
	if _, err := c.JobStates(ctx, []JobID{7, 8, 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Job(ctx, 999999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("job: %v, want ErrNotFound", err)
	}
	if len(got) != 2 || got[0].op != "job_states" || got[0].err != nil || got[1].op != "job" || !errors.Is(got[1].err, ErrNotFound) {
		t.Errorf("observed %+v, want job_states ok then job not found", got)
	}
}
