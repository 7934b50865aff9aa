package model

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinels for errors.Is. Every error the client returns for a failed call
// is an *Error that matches exactly one of them.
var (
	// ErrNotFound: the job (or other object) does not exist, or no longer:
	// slurmctld forgets finished jobs after MinJobAge.
	ErrNotFound = errors.New("not found")
	// ErrUnauthenticated: the token is missing, bad or expired.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: authenticated, but not allowed.
	ErrForbidden = errors.New("forbidden")
	// ErrRejected: Slurm refused the input (invalid partition, impossible
	// memory, malformed request). Retrying the same request will not help.
	ErrRejected = errors.New("rejected")
	// ErrUnavailable: slurmrestd or slurmctld could not be reached or failed;
	// the same request may succeed later.
	ErrUnavailable = errors.New("unavailable")
	// ErrOutcomeUnknown marks, besides ErrUnavailable, a submit whose
	// answer was lost (no answer, or a gateway error): the job may exist.
	// Only the caller can tell (by the job's comment), so it must look
	// before it submits again.
	ErrOutcomeUnknown = errors.New("outcome unknown")
)

// SlurmError is one entry of slurmrestd's errors[] array.
type SlurmError struct {
	Number      int    // Slurm errno, e.g. 2017 for an invalid job ID
	Error       string // Slurm's name for it, e.g. "Invalid job id specified"
	Description string // what went wrong, in Slurm's words
	Source      string
}

// Slurm error numbers the classification relies on (slurm_errno.h).
const (
	errnoAuthentication     = 1007 // SLURM_PROTOCOL_AUTHENTICATION_ERROR
	errnoCtldConnectionLow  = 1800 // SLURMCTLD_COMMUNICATIONS_* range
	errnoCtldConnectionHigh = 1899
	errnoInvalidPartition   = 2000 // ESLURM_INVALID_PARTITION_NAME
	errnoAccessDenied       = 2002 // ESLURM_ACCESS_DENIED
	errnoInvalidJobID       = 2017 // ESLURM_INVALID_JOB_ID
	errnoUserIDMissing      = 2010 // ESLURM_USER_ID_MISSING
	errnoESlurmHigh         = 2999
)

// ErrnoAlreadyDone is ESLURM_ALREADY_DONE: the job has already ended.
const ErrnoAlreadyDone = 2021

// Error is a failed slurmrestd call.
type Error struct {
	Kind   error        // one of the sentinels above
	Op     string       // what was attempted, e.g. "submit job"
	Status int          // HTTP status; 0 if no response
	Slurm  []SlurmError // what slurmrestd said, if anything
	Err    error        // underlying transport error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Kind.Error())
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if m := e.Message(); m != "" {
		b.WriteString(": ")
		b.WriteString(m)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Message is Slurm's own explanation, for users: the descriptions (or error
// names) of slurmrestd's errors, joined.
func (e *Error) Message() string {
	var parts []string
	for _, s := range e.Slurm {
		msg := s.Description
		if msg == "" {
			msg = s.Error
		} else if s.Error != "" && !strings.Contains(msg, s.Error) {
			msg = s.Error + ": " + msg
		}
		if msg != "" {
			parts = append(parts, msg)
		}
	}
	return strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrNotFound) and friends work.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap exposes the transport error, e.g. context.DeadlineExceeded.
func (e *Error) Unwrap() error { return e.Err }

// HasErrno tells whether slurmrestd reported Slurm error number n.
func (e *Error) HasErrno(n int) bool {
	for _, s := range e.Slurm {
		if s.Number == n {
			return true
		}
	}
	return false
}

// Classify turns an HTTP status and slurmrestd's errors[] into an *Error,
// or nil when the call succeeded. This is the one place where slurmrestd's
// answers are mapped to error kinds.
func Classify(op string, status int, errs []SlurmError) error {
	// slurmrestd sometimes answers 200 with errors (DELETE of an unknown job
	// answers 200 with 2017), so the body decides as much as the status.
	if status >= 200 && status < 300 && len(errs) == 0 {
		return nil
	}
	e := &Error{Op: op, Status: status, Slurm: errs}
	has := func(lo, hi int) bool {
		for _, s := range errs {
			if s.Number >= lo && s.Number <= hi {
				return true
			}
		}
		return false
	}
	switch {
	case status == http.StatusUnauthorized, status == http.StatusNetworkAuthenticationRequired,
		has(errnoAuthentication, errnoAuthentication):
		e.Kind = ErrUnauthenticated
	case status == http.StatusNotFound, has(errnoInvalidJobID, errnoInvalidJobID):
		e.Kind = ErrNotFound
	case status == http.StatusForbidden, has(errnoAccessDenied, errnoAccessDenied), has(errnoUserIDMissing, errnoUserIDMissing):
		e.Kind = ErrForbidden
	case has(errnoCtldConnectionLow, errnoCtldConnectionHigh):
		e.Kind = ErrUnavailable
	case status == http.StatusBadRequest, status == http.StatusUnprocessableEntity,
		status == http.StatusRequestEntityTooLarge, status == http.StatusMethodNotAllowed:
		e.Kind = ErrRejected
	// slurmrestd answers 500 for what slurmctld refused (2000 invalid
	// partition, 2014 impossible memory, ...): ESLURM_* errors are about the
	// request, not the server.
	case status == http.StatusInternalServerError && has(errnoInvalidPartition, errnoESlurmHigh):
		e.Kind = ErrRejected
	case status >= 500:
		e.Kind = ErrUnavailable
	case status >= 200 && status < 300 && has(errnoInvalidPartition, errnoESlurmHigh):
		e.Kind = ErrRejected
	default:
		e.Kind = ErrUnavailable
	}
	return e
}

// Transport wraps an error from the HTTP layer (no response): the server
// is unreachable, or the call timed out or was cancelled.
func Transport(op string, err error) error {
	return &Error{Kind: ErrUnavailable, Op: op, Err: err}
}
