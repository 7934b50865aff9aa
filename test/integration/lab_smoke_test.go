package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/test/labenv"
)

// apiVersion is served by both lab suites (24.11 and 26.05).
const apiVersion = "v0.0.42"

type rawClient struct {
	base, user, token string
}

func (c *rawClient) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-SLURM-USER-NAME", c.user)
	req.Header.Set("X-SLURM-USER-TOKEN", c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s (HTTP %d): %w: %s", method, path, resp.StatusCode, err, b)
		}
	}
	return resp.StatusCode, nil
}

// slurmErrors is the errors[] array every slurmrestd answer carries.
type slurmErrors struct {
	Errors []struct {
		Description string `json:"description"`
		ErrorNumber int    `json:"error_number"`
		Error       string `json:"error"`
	} `json:"errors"`
}

// TestLabSmoke submits a job through slurmrestd with plain net/http, waits
// for it to complete and reads its output from the shared directory.
func TestLabSmoke(t *testing.T) {
	lab := labenv.Require(t)
	token, err := lab.Token()
	if err != nil {
		t.Fatal(err)
	}
	c := &rawClient{base: lab.URL, user: lab.User, token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir, err := os.MkdirTemp(lab.Shared, "smoke-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, lab.UID, lab.UID); err != nil {
		t.Fatal(err)
	}
	outPath := filepath.Join(dir, "out.log")
	marker := fmt.Sprintf("hello from slurm %d", time.Now().UnixNano())

	start := time.Now()
	var sub struct {
		slurmErrors
		JobID int `json:"job_id"`
	}
	code, err := c.do(ctx, http.MethodPost, "/slurm/"+apiVersion+"/job/submit", map[string]any{
		"job": map[string]any{
			"script":                    "#!/bin/sh\necho \"" + marker + "\"\nid -un\n",
			"name":                      "lab-smoke",
			"partition":                 lab.Partition,
			"current_working_directory": dir,
			"environment":               []string{"PATH=/usr/bin:/bin"},
			"standard_output":           outPath,
		},
	}, &sub)
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	if code != http.StatusOK || len(sub.Errors) > 0 || sub.JobID == 0 {
		t.Fatalf("submit: HTTP %d, job %d, errors %+v", code, sub.JobID, sub.Errors)
	}
	t.Logf("Slurm %s (%s): submitted job %d in %v", lab.Version, lab.Suite, sub.JobID, time.Since(start))

	var state []string
	for {
		var got struct {
			slurmErrors
			Jobs []struct {
				JobState []string `json:"job_state"`
				ExitCode struct {
					ReturnCode struct {
						Number int `json:"number"`
					} `json:"return_code"`
				} `json:"exit_code"`
			} `json:"jobs"`
		}
		code, err := c.do(ctx, http.MethodGet, fmt.Sprintf("/slurm/%s/job/%d", apiVersion, sub.JobID), nil, &got)
		if err != nil {
			t.Fatalf("get job: %v", err)
		}
		if code != http.StatusOK || len(got.Jobs) != 1 {
			t.Fatalf("get job: HTTP %d, %d jobs, errors %+v", code, len(got.Jobs), got.Errors)
		}
		state = got.Jobs[0].JobState
		if len(state) > 0 && state[0] != "PENDING" && state[0] != "RUNNING" && state[0] != "CONFIGURING" && state[0] != "COMPLETING" {
			if rc := got.Jobs[0].ExitCode.ReturnCode.Number; rc != 0 {
				t.Errorf("exit code %d, want 0", rc)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("job %d still %v: %v", sub.JobID, state, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	if state[0] != "COMPLETED" {
		t.Fatalf("job %d ended %v, want COMPLETED", sub.JobID, state)
	}
	t.Logf("job %d COMPLETED %v after submit", sub.JobID, time.Since(start))

	out, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatalf("read job output from the shared directory: %v", err)
	}
	want := marker + "\n" + lab.User + "\n"
	if string(out) != want {
		t.Fatalf("job output %q, want %q", out, want)
	}
}
