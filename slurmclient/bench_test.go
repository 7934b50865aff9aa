package slurmclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/test/labenv"
)

// The benchmarks compare slurmclient with plain net/http doing the same
// request against the same lab slurmrestd, in the same run
// (bench/slurmclient.sh prints the ratios). They need the lab and skip
// without it.

type rawBench struct {
	hc          *http.Client
	base, token string
	user        string
}

func newRawBench(b *testing.B, lab *labenv.Lab, version string) *rawBench {
	tok, err := lab.Token()
	if err != nil {
		b.Fatal(err)
	}
	return &rawBench{hc: &http.Client{}, base: lab.URL + "/slurm/" + version, token: tok, user: lab.User}
}

func (r *rawBench) do(b *testing.B, method, path string, body []byte) []byte {
	req, err := http.NewRequest(method, r.base+path, bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("X-SLURM-USER-NAME", r.user)
	req.Header.Set("X-SLURM-USER-TOKEN", r.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		b.Fatalf("%s %s: HTTP %d %v: %.200s", method, path, resp.StatusCode, err, out)
	}
	return out
}

func benchSpec(lab *labenv.Lab, dir string) JobSpec {
	return JobSpec{
		Script: "#!/bin/sh\ntrue\n", Name: "bench", WorkDir: dir, Env: []string{"PATH=/usr/bin:/bin"},
		Stdout: "/dev/null", Partition: lab.Partition, Hold: true,
	}
}

// benchJobs are held jobs shared by every benchmark run in this process
// (go test calls a benchmark function several times); TestMain cancels them.
var benchJobs struct {
	c   *Client
	ids []JobID
}

// heldJobs returns n held jobs, submitting what is missing.
func heldJobs(b *testing.B, c *Client, lab *labenv.Lab, n int) []JobID {
	benchJobs.c = c
	for len(benchJobs.ids) < n {
		id, err := c.Submit(context.Background(), benchSpec(lab, os.TempDir()))
		if err != nil {
			b.Fatal(err)
		}
		benchJobs.ids = append(benchJobs.ids, id)
	}
	return benchJobs.ids[:n]
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, id := range benchJobs.ids {
		benchJobs.c.Cancel(context.Background(), id)
	}
	os.Exit(code)
}

// pair runs client and raw calls alternately in one loop (swapping which
// goes first each iteration) so that drift in slurmctld's load hits both
// alike, and reports each side's mean and their ratio.
func pair(b *testing.B, client, raw func()) {
	var ct, rt time.Duration
	for i := 0; i < b.N; i++ {
		first, second, ft, st := client, raw, &ct, &rt
		if i%2 == 1 {
			first, second, ft, st = raw, client, &rt, &ct
		}
		t0 := time.Now()
		first()
		t1 := time.Now()
		second()
		*ft += t1.Sub(t0)
		*st += time.Since(t1)
	}
	b.ReportMetric(float64(ct.Nanoseconds())/float64(b.N), "client-ns/op")
	b.ReportMetric(float64(rt.Nanoseconds())/float64(b.N), "raw-ns/op")
	b.ReportMetric(float64(rt)/float64(ct), "raw/client")
}

func BenchmarkLabSubmit(b *testing.B) {
	lab := labenv.Require(b)
	version, _ := labVersions(lab)
	c := labClient(b, lab, version)
	ctx := context.Background()
	spec := benchSpec(lab, os.TempDir())
	body, err := json.Marshal(map[string]any{"job": map[string]any{
		"script": spec.Script, "name": spec.Name, "current_working_directory": spec.WorkDir,
		"environment": spec.Env, "standard_output": spec.Stdout, "partition": spec.Partition, "hold": true,
	}})
	if err != nil {
		b.Fatal(err)
	}
	var ids []JobID
	b.Cleanup(func() {
		for _, id := range ids {
			c.Cancel(ctx, id)
		}
	})
	r := newRawBench(b, lab, version)
	pair(b, func() {
		id, err := c.Submit(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}, func() {
		var resp struct {
			JobID JobID `json:"job_id"`
		}
		if err := json.Unmarshal(r.do(b, http.MethodPost, "/job/submit", body), &resp); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, resp.JobID)
	})
}

func BenchmarkLabJobStates1000(b *testing.B) {
	lab := labenv.Require(b)
	version, _ := labVersions(lab)
	c := labClient(b, lab, version)
	ids := heldJobs(b, c, lab, 1000)
	r := newRawBench(b, lab, version)
	b.ResetTimer()
	pair(b, func() {
		st, err := c.JobStates(context.Background(), ids)
		if err != nil || len(st) != len(ids) {
			b.Fatalf("%d states, %v", len(st), err)
		}
	}, func() {
		q := url.Values{}
		for _, id := range ids {
			q.Add("job_id", strconv.FormatUint(uint64(id), 10))
		}
		r.do(b, http.MethodGet, "/jobs/state/?"+q.Encode(), nil)
	})
}

func BenchmarkLabJob(b *testing.B) {
	lab := labenv.Require(b)
	version, _ := labVersions(lab)
	c := labClient(b, lab, version)
	id := heldJobs(b, c, lab, 1)[0]
	r := newRawBench(b, lab, version)
	path := fmt.Sprintf("/job/%d", id)
	b.ResetTimer()
	pair(b, func() {
		if _, err := c.Job(context.Background(), id); err != nil {
			b.Fatal(err)
		}
	}, func() {
		r.do(b, http.MethodGet, path, nil)
	})
}
