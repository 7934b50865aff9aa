package slurmclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/test/labenv"
)

// labVersions are the API versions to test against the running lab: the
// newest the suite serves (what negotiation must pick) and, on sid, v0.0.42
// forced, since 26.05 serves both.
func labVersions(lab *labenv.Lab) (negotiated string, all []string) {
	if lab.Suite == "sid" {
		return "v0.0.45", []string{"v0.0.45", "v0.0.42"}
	}
	return "v0.0.42", []string{"v0.0.42"}
}

func labClient(t testing.TB, lab *labenv.Lab, version string) *Client {
	t.Helper()
	c, err := New(Config{URL: lab.URL, User: lab.User, TokenFile: lab.TokenFile, APIVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// jobDir makes a directory in the shared folder that the job user owns.
func jobDir(t *testing.T, lab *labenv.Lab) string {
	t.Helper()
	dir, err := os.MkdirTemp(lab.Shared, "slurmclient-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, lab.UID, lab.UID); err != nil {
		t.Fatal(err)
	}
	return dir
}

func waitJob(ctx context.Context, t *testing.T, c *Client, id JobID, done func(*Job) bool) *Job {
	t.Helper()
	for {
		j, err := c.Job(ctx, id)
		if err != nil {
			t.Fatalf("job %d: %v", id, err)
		}
		if done(j) {
			return j
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d still %s (%s)", id, j.State, j.StateReason)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitFile waits until a file holds want.
func waitFile(ctx context.Context, t *testing.T, path, want string) {
	t.Helper()
	for {
		if b, err := os.ReadFile(path); err == nil && string(b) == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never appeared", path)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func TestLabNegotiation(t *testing.T) {
	lab := labenv.Require(t)
	want, _ := labVersions(lab)
	c := labClient(t, lab, "")
	info, err := c.Ping(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.APIVersion != want || info.SlurmVersion != lab.Version {
		t.Fatalf("ping = %+v, want API %s and Slurm %s", info, want, lab.Version)
	}
}

func TestLab(t *testing.T) {
	lab := labenv.Require(t)
	_, versions := labVersions(lab)
	for _, v := range versions {
		t.Run(v, func(t *testing.T) {
			c := labClient(t, lab, v)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			dir := jobDir(t, lab)
			spec := func(script string) JobSpec {
				return JobSpec{
					Script:    "#!/bin/sh\n" + script + "\n",
					Name:      "slurmclient-test",
					Comment:   fmt.Sprintf("slurmclient-test-%d", time.Now().UnixNano()),
					WorkDir:   dir,
					Env:       []string{"PATH=/usr/bin:/bin"},
					Stdout:    dir + "/%j.out",
					Partition: lab.Partition,
					TimeLimit: 5 * time.Minute,
				}
			}

			t.Run("submit, run, exit code and output", func(t *testing.T) {
				id, err := c.Submit(ctx, spec("echo out-$SLURM_JOB_ID; exit 7"))
				if err != nil {
					t.Fatal(err)
				}
				j := waitJob(ctx, t, c, id, func(j *Job) bool { return j.State.Terminal() })
				if j.State != "FAILED" || j.ExitCode.ReturnCode != 7 || !j.ExitCode.Set {
					t.Errorf("job = %+v, want FAILED with return code 7", j)
				}
				if want := filepath.Join(dir, fmt.Sprintf("%d.out", id)); j.Stdout != want {
					t.Errorf("stdout %q, want %q", j.Stdout, want)
				}
				out, err := os.ReadFile(j.Stdout)
				if err != nil || string(out) != fmt.Sprintf("out-%d\n", id) {
					t.Errorf("output %q, %v", out, err)
				}
				if j.StartTime.IsZero() || j.EndTime.Before(j.StartTime) || j.UserName != lab.User {
					t.Errorf("times %v..%v, user %q", j.StartTime, j.EndTime, j.UserName)
				}
			})

			t.Run("states of many jobs in one request, then cancel them", func(t *testing.T) {
				const n = 50
				var ids []JobID
				for i := 0; i < n; i++ {
					s := spec("sleep 600")
					s.Hold = true
					id, err := c.Submit(ctx, s)
					if err != nil {
						t.Fatal(err)
					}
					ids = append(ids, id)
				}
				states, err := c.JobStates(ctx, append(ids, 99999999))
				if err != nil {
					t.Fatal(err)
				}
				if len(states) != n {
					t.Fatalf("%d states, want %d (the unknown ID left out)", len(states), n)
				}
				for _, s := range states {
					if s.State != "PENDING" {
						t.Errorf("job %d: %s", s.ID, s.State)
					}
				}
				for _, id := range ids {
					if err := c.Cancel(ctx, id); err != nil {
						t.Fatalf("cancel %d: %v", id, err)
					}
				}
				states, err = c.JobStates(ctx, ids)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range states {
					if s.State != "CANCELLED" {
						t.Errorf("after cancel, job %d: %s", s.ID, s.State)
					}
				}
			})

			t.Run("cancel a running job", func(t *testing.T) {
				id, err := c.Submit(ctx, spec("echo started; while :; do sleep 0.1; done"))
				if err != nil {
					t.Fatal(err)
				}
				waitJob(ctx, t, c, id, func(j *Job) bool { return j.State == "RUNNING" })
				if err := c.Cancel(ctx, id); err != nil {
					t.Fatal(err)
				}
				j := waitJob(ctx, t, c, id, func(j *Job) bool { return j.State.Terminal() })
				if j.State != "CANCELLED" {
					t.Errorf("state %s, want CANCELLED", j.State)
				}
				if err := c.Cancel(ctx, id); err != nil {
					t.Errorf("cancelling an ended job: %v", err)
				}
			})

			t.Run("signal a running job", func(t *testing.T) {
				id, err := c.Submit(ctx, spec("trap 'echo got-term; exit 143' TERM; echo ready; while :; do sleep 0.1; done"))
				if err != nil {
					t.Fatal(err)
				}
				j := waitJob(ctx, t, c, id, func(j *Job) bool { return j.State == "RUNNING" })
				// The trap must be set before the signal arrives.
				waitFile(ctx, t, j.Stdout, "ready\n")
				if err := c.Signal(ctx, id, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
				j = waitJob(ctx, t, c, id, func(j *Job) bool { return j.State.Terminal() })
				if j.State != "FAILED" || j.ExitCode.ReturnCode != 143 {
					t.Errorf("job %+v, want FAILED with 143 from the trap", j)
				}
				// slurmstepd adds its own notice to the job's stdout.
				if out, _ := os.ReadFile(j.Stdout); !strings.HasPrefix(string(out), "ready\n") || !strings.HasSuffix(string(out), "got-term\n") {
					t.Errorf("output %q", out)
				}
				if err := c.Signal(ctx, id, syscall.SIGTERM); !errors.Is(err, ErrRejected) && !errors.Is(err, ErrNotFound) {
					t.Errorf("signalling an ended job: %v", err)
				}
			})

			t.Run("errors", func(t *testing.T) {
				s := spec("true")
				s.Partition = "no-such-partition"
				_, err := c.Submit(ctx, s)
				var se *Error
				if !errors.Is(err, ErrRejected) || !errors.As(err, &se) || !strings.Contains(se.Message(), "Invalid partition") {
					t.Errorf("invalid partition: %v", err)
				}
				if _, err := c.Job(ctx, 99999999); !errors.Is(err, ErrNotFound) {
					t.Errorf("unknown job: %v", err)
				}
				if err := c.Cancel(ctx, 99999999); !errors.Is(err, ErrNotFound) {
					t.Errorf("cancel unknown job: %v", err)
				}
				s = spec("true")
				s.MemoryMB = 1 << 30
				if _, err := c.Submit(ctx, s); !errors.Is(err, ErrRejected) {
					t.Errorf("impossible memory: %v", err)
				}
			})

			t.Run("bad token, then rotation without restart", func(t *testing.T) {
				tok := filepath.Join(t.TempDir(), "token")
				if err := os.WriteFile(tok, []byte("not-a-jwt"), 0o600); err != nil {
					t.Fatal(err)
				}
				c, err := New(Config{URL: lab.URL, User: lab.User, TokenFile: tok, APIVersion: v})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Ping(ctx); !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("bad token: %v", err)
				}
				if _, err := c.JobStates(ctx, []JobID{1}); !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("bad token: %v", err)
				}
				good, err := lab.Token()
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(tok, []byte(good), 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Ping(ctx); err != nil {
					t.Fatalf("after rotation: %v", err)
				}
			})

			t.Run("nodes and partitions", func(t *testing.T) {
				nodes, err := c.Nodes(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(nodes) != len(lab.Nodes) {
					t.Fatalf("nodes = %+v, want %v", nodes, lab.Nodes)
				}
				for i, n := range nodes {
					if n.Name != lab.Nodes[i] || n.CPUs != lab.NodeCPUs[i] || n.MemoryMB == 0 {
						t.Errorf("node %d = %+v, want %s with %d CPUs", i, n, lab.Nodes[i], lab.NodeCPUs[i])
					}
				}
				if g := nodes[len(nodes)-1].Gres; !strings.Contains(g, fmt.Sprintf("gpu:%d", lab.GPUs)) {
					t.Errorf("last node's gres %q, want gpu:%d", g, lab.GPUs)
				}
				parts, err := c.Partitions(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(parts) != 1 || parts[0].Name != lab.Partition || parts[0].TotalCPUs != lab.TotalCPUs || parts[0].TotalNodes != len(lab.Nodes) {
					t.Errorf("partitions = %+v", parts)
				}
			})

			t.Run("jobs list", func(t *testing.T) {
				jobs, err := c.Jobs(ctx, JobFilter{})
				if err != nil {
					t.Fatal(err)
				}
				if len(jobs) == 0 {
					t.Fatal("no jobs listed")
				}
				for _, j := range jobs {
					if strings.Contains(j.Stdout, "%") {
						t.Errorf("job %d: unexpanded stdout %q", j.ID, j.Stdout)
					}
				}
			})
		})
	}
}
