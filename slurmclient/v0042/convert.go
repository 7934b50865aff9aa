package v0042

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/slurmkube/slurm-vk/slurmclient/model"
)

// stateReason is Slurm's state reason as the model holds it: "None",
// Slurm's word for no reason, is empty, so no caller needs to know it.
func stateReason(s string) string {
	if s == "None" {
		return ""
	}
	return s
}

func toJob(j V0042JobInfo) model.Job {
	st, flags := model.SplitState(strs(deref(j.JobState)))
	job := model.Job{
		ID:          model.JobID(deref(j.JobId)),
		Name:        deref(j.Name),
		Comment:     deref(j.Comment),
		UserName:    deref(j.UserName),
		Partition:   deref(j.Partition),
		State:       st,
		StateFlags:  flags,
		StateReason: stateReason(deref(j.StateReason)),
		StateDesc:   deref(j.StateDescription),
		SubmitTime:  unixTime(j.SubmitTime),
		StartTime:   unixTime(j.StartTime),
		EndTime:     unixTime(j.EndTime),
		Nodes:       deref(j.Nodes),
		BatchHost:   deref(j.BatchHost),
		WorkDir:     deref(j.CurrentWorkingDirectory),
		Stdout:      deref(j.StandardOutput),
		Stderr:      deref(j.StandardError),
	}
	if n, ok := noVal32(j.Cpus); ok {
		job.CPUs = int(n)
	}
	if e := j.ExitCode; e != nil && st.Terminal() {
		job.ExitCode.Set = true
		job.ExitCode.Status = strs(deref(e.Status))
		if n, ok := noVal32(e.ReturnCode); ok {
			job.ExitCode.ReturnCode = int(n)
		}
		if e.Signal != nil {
			if n, ok := noVal16(e.Signal.Id); ok {
				job.ExitCode.Signal = int(n)
			}
		}
	}
	return job
}

// check classifies an answer; errs is only called when the body decoded.
func check(op string, resp *http.Response, decoded bool, errs func() *V0042OpenapiErrors) error {
	var e []model.SlurmError
	if decoded {
		e = convertErrors(errs())
	}
	return classify(op, resp, decoded, e)
}

func classify(op string, resp *http.Response, decoded bool, errs []model.SlurmError) error {
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	if err := model.Classify(op, status, errs); err != nil {
		return err
	}
	if !decoded {
		// 2xx without a JSON body we understand: not an answer we can use.
		return &model.Error{Kind: model.ErrUnavailable, Op: op, Status: status, Err: fmt.Errorf("unexpected answer (content type %q)", resp.Header.Get("Content-Type"))}
	}
	return nil
}

func convertErrors(errs *V0042OpenapiErrors) []model.SlurmError {
	if errs == nil {
		return nil
	}
	out := make([]model.SlurmError, 0, len(*errs))
	for _, e := range *errs {
		out = append(out, model.SlurmError{
			Number:      int(deref(e.ErrorNumber)),
			Error:       deref(e.Error),
			Description: deref(e.Description),
			Source:      deref(e.Source),
		})
	}
	return out
}

func isJSON(resp *http.Response) bool {
	return strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json")
}

// pick returns the decoded 200 body, else the decoded default (error) body.
func pick[T any](ok, def *T) *T {
	if ok != nil {
		return ok
	}
	return def
}

func noVal64(v *V0042Uint64NoValStruct) int64 {
	if v == nil || !deref(v.Set) || deref(v.Infinite) {
		return 0
	}
	return deref(v.Number)
}

func noVal32(v *V0042Uint32NoValStruct) (int32, bool) {
	if v == nil || !deref(v.Set) || deref(v.Infinite) {
		return 0, false
	}
	return deref(v.Number), true
}

func noVal16(v *V0042Uint16NoValStruct) (int32, bool) {
	if v == nil || !deref(v.Set) || deref(v.Infinite) {
		return 0, false
	}
	return deref(v.Number), true
}

// unixTime maps Slurm's "unset or 0" to the zero time.
func unixTime(v *V0042Uint64NoValStruct) time.Time {
	if n := noVal64(v); n > 0 {
		return time.Unix(n, 0)
	}
	return time.Time{}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func ptr[T any](v T) *T { return &v }

// opt is nil for "", so unset fields stay out of the request.
func opt(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// strs converts enum lists (typed strings in some API versions) to []string.
func strs[T ~string](in []T) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = string(s)
	}
	return out
}
