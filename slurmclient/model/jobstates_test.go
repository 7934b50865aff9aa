package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// reference decodes the same answer with encoding/json, keys matched
// exactly (json.Unmarshal into a struct would also match "JOBS").
func reference(data []byte) ([]JobStatus, []byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, nil, err
	}
	var raws []map[string]json.RawMessage
	if err := json.Unmarshal(orNull(top["jobs"]), &raws); err != nil {
		return nil, nil, err
	}
	var out []JobStatus
	for _, j := range raws {
		var states []string
		if err := json.Unmarshal(orNull(j["state"]), &states); err != nil {
			return nil, nil, err
		}
		idRaw := orNull(j["job_id"])
		var text string
		switch idRaw[0] {
		case '"':
			if err := json.Unmarshal(idRaw, &text); err != nil {
				return nil, nil, err
			}
		case 'n':
			continue
		case '{', '[', 't', 'f':
			return nil, nil, fmt.Errorf("job_id %s", idRaw)
		default:
			text = string(idRaw)
		}
		id, err := strconv.ParseUint(text, 10, 32)
		if err != nil {
			continue
		}
		st, flags := SplitState(states)
		out = append(out, JobStatus{ID: JobID(id), State: st, StateFlags: flags})
	}
	var errs []byte
	if e, ok := top["errors"]; ok {
		errs = e
	}
	return out, errs, nil
}

func orNull(b json.RawMessage) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	return b
}

// duplicateKeys reports whether some object repeats a key: JSON leaves
// that undefined, and the two decoders may then differ.
func duplicateKeys(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token in an object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if k, ok := tok.(string); ok && top != nil && top.object && top.key {
			if top.keys[k] {
				return true
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, object: true, key: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].key = true // a value ended
		}
	}
}

func same(t *testing.T, input []byte) {
	t.Helper()
	got, gotErrs, err := ParseJobStates(input)
	if duplicateKeys(input) {
		return // only: no panic
	}
	want, wantErrs, wantErr := reference(input)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%.200q: scanner error %v, encoding/json error %v", input, err, wantErr)
	}
	if err != nil {
		return
	}
	if len(got) == 0 && len(want) == 0 {
		got, want = nil, nil
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%.200q:\n got  %+v\n want %+v", input, got, want)
	}
	var g, w any
	json.Unmarshal(orNull(gotErrs), &g)
	json.Unmarshal(orNull(wantErrs), &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("%.200q: errors %s, want %s", input, gotErrs, wantErrs)
	}
}

var cases = []string{
	`{"jobs":[{"job_id":"12","state":["RUNNING"]},{"job_id":"13","state":["PENDING","REQUEUED"]}],"errors":[]}`,
	`{"jobs":[{"job_id":"12_3","state":["RUNNING"]},{"job_id":14,"state":["COMPLETED"]}]}`,
	`{"meta":{"plugin":{"type":"openapi\/slurmctld"},"command":[]},"jobs":[],"errors":[{"error_number":1007,"description":"x"}],"warnings":[]}`,
	`{"jobs":null}`, `null`, `{}`, `{"jobs":[null,{"job_id":null},{"state":null,"job_id":"9"}]}`,
	`{"jobs":[{"job_id":"1","state":["CANCELLED",null,"\u0052UNNING"]}]}`,
	`{"jobs":[{"job_id":"99999999999","state":["RUNNING"]}]}`,
	`{"jobs":[{"job_id":"1"}],"jobs":[{"job_id":"2"}]}`,
	`{"JOBS":[{"job_id":"1"}]}`, `{"jobs":[{"job_id":"1","x":[1,2.5e3,true,false,null,{"a":"}"}]}]}`,
	` { "jobs" : [ { "job_id" : "7" , "state" : [ "FAILED" ] } ] } `,
	"{\"jobs\":[{\"job_id\":\"1\",\"state\":[\"caf\xc3\xa9\",\"bad\xff\"]}]}",
	// Malformed: both decoders must refuse.
	`{"jobs":[{"job_id":"1"}]`, `{"jobs":[{"job_id":"1",}]}`, `{"jobs":{}}`, `{"jobs":[{"job_id":true}]}`,
	`{"jobs":[{"state":[1]}]}`, `{"jobs":[]} x`, `{"a":tru}`, `{"a":"x\`, `[]`, ``, `{"jobs":[{"job_id":"1"}]}}`,
	`{"a":01}`, `{"a":-}`, "{\"a\":\"\x01\"}",
}

func TestParseJobStatesMatchesEncodingJSON(t *testing.T) {
	for _, c := range cases {
		same(t, []byte(c))
	}
	for _, v := range []string{"v0.0.42", "v0.0.45"} {
		b, err := os.ReadFile("../testdata/" + v + "/jobs-state.200.json")
		if err != nil {
			t.Fatal(err)
		}
		same(t, b)
		jobs, _, err := ParseJobStates(b)
		if err != nil || len(jobs) != 3 || jobs[0].State == "" {
			t.Errorf("%s: %+v %v", v, jobs, err)
		}
	}
	same(t, bigAnswer(1000))
}

func FuzzParseJobStates(f *testing.F) {
	for _, c := range cases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		same(t, b)
	})
}

// bigAnswer is an answer for n jobs shaped like slurmrestd's (indented,
// with meta and escaped slashes).
func bigAnswer(n int) []byte {
	var b bytes.Buffer
	b.WriteString("{\n  \"jobs\": [\n")
	states := []string{"RUNNING", "PENDING", "COMPLETED", "FAILED\",\n        \"REQUEUED"}
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, "    {\n      \"job_id\": \"%d\",\n      \"state\": [\n        \"%s\"\n      ]\n    }", 1000+i, states[i%len(states)])
	}
	b.WriteString("\n  ],\n  \"meta\": {\"plugin\": {\"type\": \"openapi\\/slurmctld\", \"name\": \"Slurm OpenAPI slurmctld\"}, " +
		"\"slurm\": {\"version\": {\"major\": \"24\", \"micro\": \"5\", \"minor\": \"11\"}, \"release\": \"24.11.5\"}},\n" +
		"  \"errors\": [],\n  \"warnings\": []\n}")
	return b.Bytes()
}

// BenchmarkParseJobStates compares the scanner with encoding/json decoding
// the same 1,000-job answer into the struct the adapter used before.
func BenchmarkParseJobStates(b *testing.B) {
	data := bigAnswer(1000)
	b.Run("scanner", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if jobs, _, err := ParseJobStates(data); err != nil || len(jobs) != 1000 {
				b.Fatal(len(jobs), err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			var r struct {
				Jobs []struct {
					JobID string   `json:"job_id"`
					State []string `json:"state"`
				} `json:"jobs"`
				Errors json.RawMessage `json:"errors"`
			}
			if err := json.NewDecoder(bytes.NewReader(data)).Decode(&r); err != nil {
				b.Fatal(err)
			}
			out := make([]JobStatus, 0, len(r.Jobs))
			for _, j := range r.Jobs {
				id, _ := strconv.ParseUint(j.JobID, 10, 32)
				st, flags := SplitState(j.State)
				out = append(out, JobStatus{ID: JobID(id), State: st, StateFlags: flags})
			}
			if len(out) != 1000 {
				b.Fatal(len(out))
			}
		}
	})
}

func TestBigAnswerIsValid(t *testing.T) {
	if b := bigAnswer(4); !json.Valid(b) || !strings.Contains(string(b), `"REQUEUED"`) {
		t.Fatalf("%s", b)
	}
}
