package model

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ParseJobStates reads the answer of GET /slurm/vX/jobs/state, the one
// request the provider makes every status cycle for all of a node's jobs:
//
//	{"jobs": [{"job_id": "12", "state": ["RUNNING"]}, ...], "errors": [...], ...}
//
// It is a hand-written scanner because encoding/json spent more time on
// this answer than slurmrestd took to send it (0.7 ms for 1,000 jobs on 2
// cores); it allocates only the result. The answer has this shape in every
// API version we speak, so the version packages share it. Members other than
// "jobs" and "errors" are skipped; "errors" is returned raw for the caller's
// own types. Job IDs that are not plain numbers (array or het jobs, "12_3")
// are left out: they are never ours.
func ParseJobStates(data []byte) (jobs []JobStatus, rawErrors []byte, err error) {
	s := &scanner{b: data}
	ok, err := s.open('{')
	for first := true; ok && err == nil; first = false {
		if ok, err = s.more('}', first); !ok || err != nil {
			break
		}
		var k []byte
		if k, err = s.key(); err != nil {
			break
		}
		switch string(k) {
		case "jobs":
			// Sized at once: one "job_id" per job.
			jobs = make([]JobStatus, 0, bytes.Count(data, []byte(`"job_id"`)))
			err = s.jobs(&jobs)
		case "errors":
			s.ws()
			start := s.i
			err = s.skip()
			rawErrors = data[start:s.i]
		default:
			err = s.skip()
		}
	}
	if err != nil {
		return nil, nil, err
	}
	s.ws()
	if s.i != len(s.b) {
		return nil, nil, s.errorf("data after the answer")
	}
	return jobs, rawErrors, nil
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("jobs/state answer, byte %d: %w", s.i, fmt.Errorf(format, args...))
}

var errEOF = errors.New("unexpected end")

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		if s.i >= len(s.b) {
			return s.errorf("%w, want %q", errEOF, c)
		}
		return s.errorf("got %q, want %q", s.b[s.i], c)
	}
	s.i++
	return nil
}

// literal consumes null, true, false or a number; null reports true.
func (s *scanner) literal() (null bool, err error) {
	start := s.i
scan:
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '+', c == '.', c == 'E':
			s.i++
		default:
			break scan
		}
	}
	switch lit := string(s.b[start:s.i]); {
	case lit == "null":
		return true, nil
	case lit == "true" || lit == "false":
		return false, nil
	case lit != "" && json.Valid(s.b[start:s.i]):
		return false, nil
	}
	s.i = start
	return false, s.errorf("not a JSON value")
}

// str consumes a string and returns its contents, a slice of the input
// unless they hold escapes or non-ASCII bytes (then encoding/json decodes
// them, replacing invalid UTF-8 as it always does).
func (s *scanner) str() (text []byte, err error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start, escaped := s.i, false
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			if !escaped {
				return s.b[start : s.i-1], nil
			}
			var out string
			if err := json.Unmarshal(s.b[start-1:s.i], &out); err != nil {
				return nil, s.errorf("string: %w", err)
			}
			return []byte(out), nil
		case c == '\\':
			escaped = true
			s.i += 2
		case c < 0x20:
			return nil, s.errorf("control character in string")
		case c >= 0x80:
			escaped = true
			s.i++
		default:
			s.i++
		}
	}
	return nil, s.errorf("string: %w", errEOF)
}

// open consumes c ('{' or '['); null is an empty one (ok false).
func (s *scanner) open(c byte) (ok bool, err error) {
	if s.peek() == 'n' {
		if null, err := s.literal(); err != nil || !null {
			return false, s.errorf("want %q", c)
		}
		return false, nil
	}
	return true, s.expect(c)
}

// more reports whether another member or element follows, consuming the
// comma before it or the closing byte. The iteration is written out at
// each use, not passed as callbacks: closures would cost an allocation
// per job.
func (s *scanner) more(closing byte, first bool) (bool, error) {
	switch c := s.peek(); {
	case c == closing:
		s.i++
		return false, nil
	case first:
		return true, nil
	case c == ',':
		s.i++
		return true, nil
	}
	return false, s.errorf("want , or %q", closing)
}

// key consumes a member's name and its colon.
func (s *scanner) key() ([]byte, error) {
	k, err := s.str()
	if err != nil {
		return nil, err
	}
	return k, s.expect(':')
}

// skip consumes any value.
func (s *scanner) skip() error {
	switch c := s.peek(); c {
	case '"':
		_, err := s.str()
		return err
	case '{', '[':
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		s.i++
		for first := true; ; first = false {
			more, err := s.more(closing, first)
			if err != nil || !more {
				return err
			}
			if c == '{' {
				if _, err := s.key(); err != nil {
					return err
				}
			}
			if err := s.skip(); err != nil {
				return err
			}
		}
	case 0:
		return s.errorf("value: %w", errEOF)
	}
	_, err := s.literal()
	return err
}

func (s *scanner) jobs(out *[]JobStatus) error {
	if ok, err := s.open('['); !ok || err != nil {
		return err
	}
	var states []string // reused: SplitState copies what it keeps
	for first := true; ; first = false {
		more, err := s.more(']', first)
		if err != nil || !more {
			return err
		}
		var id uint64
		idOK := false
		states = states[:0]
		ok, err := s.open('{')
		if err != nil {
			return err
		}
		for first := true; ok; first = false {
			if ok, err = s.more('}', first); err != nil {
				return err
			} else if !ok {
				break
			}
			k, err := s.key()
			if err != nil {
				return err
			}
			switch string(k) {
			case "job_id":
				id, idOK, err = s.jobID()
			case "state":
				states, err = s.states(states[:0])
			default:
				err = s.skip()
			}
			if err != nil {
				return err
			}
		}
		if idOK {
			st, flags := SplitState(states)
			*out = append(*out, JobStatus{ID: JobID(id), State: st, StateFlags: flags})
		}
	}
}

// states reads a job's state list; null elements are "", as encoding/json
// makes them.
func (s *scanner) states(list []string) ([]string, error) {
	ok, err := s.open('[')
	for first := true; ok && err == nil; first = false {
		if ok, err = s.more(']', first); !ok || err != nil {
			break
		}
		if s.peek() == 'n' {
			var null bool
			if null, err = s.literal(); err == nil && !null {
				err = s.errorf("want a state string")
			}
			list = append(list, "")
			continue
		}
		var b []byte
		if b, err = s.str(); err == nil {
			list = append(list, stateString(b))
		}
	}
	return list, err
}

// jobID reads "12" (slurmrestd's form) or 12; ok is false for IDs that
// are not plain 32-bit numbers.
func (s *scanner) jobID() (id uint64, ok bool, err error) {
	var digits []byte
	if s.peek() == '"' {
		if digits, err = s.str(); err != nil {
			return 0, false, err
		}
	} else {
		start := s.i
		if null, err := s.literal(); err != nil || null {
			return 0, false, err
		}
		if digits = s.b[start:s.i]; digits[0] == 't' || digits[0] == 'f' {
			return 0, false, s.errorf("job_id %s", digits)
		}
	}
	id, perr := strconv.ParseUint(string(digits), 10, 32)
	return id, perr == nil, nil
}

// stateString returns the known states without allocating.
func stateString(b []byte) string {
	switch string(b) {
	case "PENDING":
		return "PENDING"
	case "RUNNING":
		return "RUNNING"
	case "COMPLETED":
		return "COMPLETED"
	case "CANCELLED":
		return "CANCELLED"
	case "FAILED":
		return "FAILED"
	case "COMPLETING":
		return "COMPLETING"
	case "TIMEOUT":
		return "TIMEOUT"
	case "REQUEUED":
		return "REQUEUED"
	case "CONFIGURING":
		return "CONFIGURING"
	}
	return string(b)
}
