package v0042

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/slurmkube/slurm-vk/slurmclient/model"
)

// APIVersion is the slurmrestd API version this package speaks.
const APIVersion = "v0.0.42"

// Backend adapts the generated client to model.Backend.
type Backend struct {
	c *ClientWithResponses
}

var _ model.Backend = (*Backend)(nil)

// New returns a Backend for the slurmrestd at server (scheme://host[:port]),
// sending requests through doer (which adds authentication).
func New(server string, doer HttpRequestDoer) (*Backend, error) {
	c, err := NewClientWithResponses(server, WithHTTPClient(doer))
	if err != nil {
		return nil, err
	}
	return &Backend{c: c}, nil
}

// Version implements model.Backend.
func (b *Backend) Version() string { return APIVersion }

// Ping implements model.Backend. It calls /diag, not /ping: /ping answers
// 200 even to a bad token, /diag needs a valid one.
func (b *Backend) Ping(ctx context.Context) (model.ServerInfo, error) {
	const op = "ping slurmrestd"
	resp, err := b.c.SlurmV0042GetDiagWithResponse(ctx)
	if err != nil {
		return model.ServerInfo{}, model.Transport(op, err)
	}
	body := pick(resp.JSON200, resp.JSONDefault)
	if err := check(op, resp.HTTPResponse, body != nil, func() *V0042OpenapiErrors { return body.Errors }); err != nil {
		return model.ServerInfo{}, err
	}
	info := model.ServerInfo{APIVersion: APIVersion}
	if m := body.Meta; m != nil && m.Slurm != nil {
		info.Cluster = deref(m.Slurm.Cluster)
		if v := m.Slurm.Version; v != nil {
			info.SlurmVersion = deref(v.Major) + "." + deref(v.Minor) + "." + deref(v.Micro)
		}
	}
	return info, nil
}

// Submit implements model.Backend.
func (b *Backend) Submit(ctx context.Context, spec model.JobSpec) (model.JobID, error) {
	const op = "submit job"
	body, err := submitBody(spec)
	if err != nil {
		return 0, &model.Error{Kind: model.ErrRejected, Op: op, Err: err}
	}
	resp, err := b.c.SlurmV0042PostJobSubmitWithBodyWithResponse(ctx, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, model.Transport(op, err)
	}
	r := pick(resp.JSON200, resp.JSONDefault)
	if err := check(op, resp.HTTPResponse, r != nil, func() *V0042OpenapiErrors { return r.Errors }); err != nil {
		return 0, err
	}
	if r == nil || r.JobId == nil || *r.JobId <= 0 {
		return 0, &model.Error{Kind: model.ErrUnavailable, Op: op, Status: resp.StatusCode(), Err: fmt.Errorf("no job_id in answer")}
	}
	return model.JobID(*r.JobId), nil
}

// submitBody builds the JSON job description. Extra fields are checked
// against the generated job description, so a typo is refused before
// anything is submitted (slurmrestd itself would only warn, after creating
// the job).
func submitBody(s model.JobSpec) ([]byte, error) {
	d := V0042JobDescMsg{
		Script:                  &s.Script,
		Name:                    opt(s.Name),
		Comment:                 opt(s.Comment),
		CurrentWorkingDirectory: opt(s.WorkDir),
		Environment:             &s.Env,
		StandardOutput:          opt(s.Stdout),
		StandardError:           opt(s.Stderr),
		Partition:               opt(s.Partition),
		Account:                 opt(s.Account),
		Qos:                     opt(s.QOS),
		Reservation:             opt(s.Reservation),
		Constraints:             opt(s.Constraints),
	}
	if s.CPUsPerTask > 0 {
		n := int32(s.CPUsPerTask)
		d.CpusPerTask = &n
	}
	if s.MemoryMB > 0 {
		d.MemoryPerNode = &V0042Uint64NoValStruct{Set: ptr(true), Number: &s.MemoryMB}
	}
	if s.Gres != "" {
		d.TresPerNode = ptr("gres/" + s.Gres)
	}
	if s.GresPerTask != "" {
		d.TresPerTask = ptr("gres/" + s.GresPerTask)
	}
	if s.MemoryPerCPUMB > 0 {
		d.MemoryPerCpu = &V0042Uint64NoValStruct{Set: ptr(true), Number: &s.MemoryPerCPUMB}
	}
	if s.MinNodes > 0 {
		d.MinimumNodes = ptr(int32(s.MinNodes))
		d.MaximumNodes = ptr(int32(max(s.MaxNodes, s.MinNodes)))
	}
	if s.Tasks > 0 {
		d.Tasks = ptr(int32(s.Tasks))
	}
	if s.TasksPerNode > 0 {
		d.TasksPerNode = ptr(int32(s.TasksPerNode))
	}
	if s.Exclusive {
		d.Shared = sharedNone()
	}
	if s.TimeLimit > 0 {
		min := int32((s.TimeLimit + time.Minute - 1) / time.Minute)
		d.TimeLimit = &V0042Uint32NoValStruct{Set: ptr(true), Number: &min}
	}
	if s.Hold {
		d.Hold = ptr(true)
	}
	job, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	if len(s.Extra) > 0 {
		var m map[string]any
		if err := json.Unmarshal(job, &m); err != nil {
			return nil, err
		}
		for k, v := range s.Extra {
			if !jobDescFields[k] {
				return nil, fmt.Errorf("%q is not a field of a %s job description", k, APIVersion)
			}
			m[k] = v
		}
		if job, err = json.Marshal(m); err != nil {
			return nil, err
		}
	}
	return json.Marshal(map[string]json.RawMessage{"job": job})
}

// jobDescFields are the JSON names of the job description's fields.
var jobDescFields = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeOf(V0042JobDescMsg{})
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		m[name] = true
	}
	return m
}()

// Job implements model.Backend.
func (b *Backend) Job(ctx context.Context, id model.JobID) (*model.Job, error) {
	op := fmt.Sprintf("get job %d", id)
	resp, err := b.c.SlurmV0042GetJobWithResponse(ctx, strconv.FormatUint(uint64(id), 10), nil)
	if err != nil {
		return nil, model.Transport(op, err)
	}
	r := pick(resp.JSON200, resp.JSONDefault)
	if err := check(op, resp.HTTPResponse, r != nil, func() *V0042OpenapiErrors { return r.Errors }); err != nil {
		return nil, err
	}
	for _, j := range r.Jobs {
		if j.JobId != nil && model.JobID(*j.JobId) == id {
			job := toJob(j)
			return &job, nil
		}
	}
	return nil, &model.Error{Kind: model.ErrNotFound, Op: op, Status: resp.StatusCode()}
}

// Jobs implements model.Backend.
func (b *Backend) Jobs(ctx context.Context, f model.JobFilter) ([]model.Job, error) {
	const op = "list jobs"
	params := &SlurmV0042GetJobsParams{}
	if !f.UpdatedSince.IsZero() {
		params.UpdateTime = ptr(strconv.FormatInt(f.UpdatedSince.Unix(), 10))
	}
	resp, err := b.c.SlurmV0042GetJobsWithResponse(ctx, params)
	if err != nil {
		return nil, model.Transport(op, err)
	}
	r := pick(resp.JSON200, resp.JSONDefault)
	if err := check(op, resp.HTTPResponse, r != nil, func() *V0042OpenapiErrors { return r.Errors }); err != nil {
		return nil, err
	}
	jobs := make([]model.Job, 0, len(r.Jobs))
	for _, j := range r.Jobs {
		jobs = append(jobs, toJob(j))
	}
	return jobs, nil
}

// The /jobs/state answer is decoded by model.ParseJobStates: the served
// spec describes it as a job_info_resp, but slurmrestd sends job_id as a
// string and the state under "state", so the generated decoder fails on
// every real answer.

// bufs holds the buffers JobStates reads answers into: one answer per
// status cycle, tens of KiB for a thousand jobs.
var bufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// JobStates implements model.Backend. Unknown IDs are left out of the
// answer, as slurmrestd does.
func (b *Backend) JobStates(ctx context.Context, ids []model.JobID) ([]model.JobStatus, error) {
	const op = "get job states"
	if len(ids) == 0 {
		return nil, nil
	}
	// The spec says "CSV list", but slurmrestd refuses commas in the query
	// (400): it wants the parameter repeated.
	q := make(url.Values, 1)
	for _, id := range ids {
		q.Add("job_id", strconv.FormatUint(uint64(id), 10))
	}
	raw, err := b.c.ClientInterface.(*Client).SlurmV0042GetJobsState(ctx, nil, func(_ context.Context, req *http.Request) error {
		req.URL.RawQuery = q.Encode()
		return nil
	})
	if err != nil {
		return nil, model.Transport(op, err)
	}
	defer raw.Body.Close()
	buf := bufs.Get().(*bytes.Buffer)
	defer bufs.Put(buf)
	buf.Reset()
	if raw.ContentLength > 0 {
		buf.Grow(int(raw.ContentLength))
	}
	if _, err := buf.ReadFrom(raw.Body); err != nil {
		return nil, model.Transport(op, err)
	}
	var (
		jobs    []model.JobStatus
		errs    V0042OpenapiErrors
		decoded bool
	)
	if isJSON(raw) {
		var rawErrs []byte
		if jobs, rawErrs, err = model.ParseJobStates(buf.Bytes()); err != nil {
			return nil, &model.Error{Kind: model.ErrUnavailable, Op: op, Status: raw.StatusCode, Err: err}
		}
		if len(rawErrs) > 0 {
			if err := json.Unmarshal(rawErrs, &errs); err != nil {
				return nil, &model.Error{Kind: model.ErrUnavailable, Op: op, Status: raw.StatusCode, Err: fmt.Errorf("decode errors: %w", err)}
			}
		}
		decoded = true
	}
	if err := check(op, raw, decoded, func() *V0042OpenapiErrors { return &errs }); err != nil {
		return nil, err
	}
	return jobs, nil
}

// Cancel implements model.Backend. slurmrestd answers 200 even when the job
// is unknown; the per-job status then carries the error, which we report.
func (b *Backend) Cancel(ctx context.Context, id model.JobID, signal string) error {
	op := fmt.Sprintf("cancel job %d", id)
	params := &SlurmV0042DeleteJobParams{}
	if signal != "" {
		// FULL_JOB: the batch shell and every process of the job, so the
		// signal reaches the containers (without it, signals other than
		// KILL skip the batch step, which is all a pod's job has).
		full := SlurmV0042DeleteJobParamsFlags("FULL_JOB")
		params.Signal, params.Flags = &signal, &full
	}
	resp, err := b.c.SlurmV0042DeleteJobWithResponse(ctx, strconv.FormatUint(uint64(id), 10), params)
	if err != nil {
		return model.Transport(op, err)
	}
	r := pick(resp.JSON200, resp.JSONDefault)
	var errs []model.SlurmError
	if r != nil {
		errs = convertErrors(r.Errors)
		for _, s := range r.Status {
			if s.Error != nil && deref(s.Error.Code) != 0 {
				errs = append(errs, model.SlurmError{
					Number:      int(deref(s.Error.Code)),
					Error:       deref(s.Error.String),
					Description: deref(s.Error.Message),
				})
			}
		}
	}
	return classify(op, resp.HTTPResponse, r != nil, errs)
}

// Nodes implements model.Backend.
func (b *Backend) Nodes(ctx context.Context) ([]model.Node, error) {
	const op = "list nodes"
	resp, err := b.c.SlurmV0042GetNodesWithResponse(ctx, nil)
	if err != nil {
		return nil, model.Transport(op, err)
	}
	r := pick(resp.JSON200, resp.JSONDefault)
	if err := check(op, resp.HTTPResponse, r != nil, func() *V0042OpenapiErrors { return r.Errors }); err != nil {
		return nil, err
	}
	out := make([]model.Node, 0, len(r.Nodes))
	for _, n := range r.Nodes {
		out = append(out, model.Node{
			Name:         deref(n.Name),
			Address:      deref(n.Address),
			CPUs:         int(deref(n.Cpus)),
			MemoryMB:     deref(n.RealMemory),
			FreeMemMB:    noVal64(n.FreeMem),
			AllocCPUs:    int(deref(n.AllocCpus)),
			AllocMemMB:   deref(n.AllocMemory),
			Gres:         deref(n.Gres),
			State:        strs(deref(n.State)),
			Partitions:   deref(n.Partitions),
			Features:     deref(n.ActiveFeatures),
			SlurmVersion: deref(n.Version),

			OperatingSystem: deref(n.OperatingSystem),
			Architecture:    deref(n.Architecture),
		})
	}
	return out, nil
}

// Partitions implements model.Backend.
func (b *Backend) Partitions(ctx context.Context) ([]model.Partition, error) {
	const op = "list partitions"
	resp, err := b.c.SlurmV0042GetPartitionsWithResponse(ctx, nil)
	if err != nil {
		return nil, model.Transport(op, err)
	}
	r := pick(resp.JSON200, resp.JSONDefault)
	if err := check(op, resp.HTTPResponse, r != nil, func() *V0042OpenapiErrors { return r.Errors }); err != nil {
		return nil, err
	}
	out := make([]model.Partition, 0, len(r.Partitions))
	for _, p := range r.Partitions {
		mp := model.Partition{Name: deref(p.Name)}
		if p.Nodes != nil {
			mp.Nodes = deref(p.Nodes.Configured)
			mp.TotalNodes = int(deref(p.Nodes.Total))
		}
		if p.Cpus != nil {
			mp.TotalCPUs = int(deref(p.Cpus.Total))
		}
		if p.Partition != nil {
			mp.State = strs(deref(p.Partition.State))
		}
		if p.Maximums != nil {
			if m, ok := noVal32(p.Maximums.Time); ok {
				mp.MaxTime = time.Duration(m) * time.Minute
			}
		}
		out = append(out, mp)
	}
	return out, nil
}
