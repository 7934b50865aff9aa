package fetch

import "time"

// Headers on a log read (protocol v1, README.md): the server sets them,
// the client's follow reader depends on them.
const (
	HeaderOffset   = "X-Fetch-Offset"    // offset of the first byte in the body
	HeaderNext     = "X-Fetch-Next"      // offset to ask for next
	HeaderSize     = "X-Fetch-Size"      // the file's size when read
	HeaderComplete = "X-Fetch-Complete"  // "true": exit marker present and every byte delivered
	HeaderExitCode = "X-Fetch-Exit-Code" // the container's exit code, once known
	// HeaderTimes, on a read asked with times=1, times the body's bytes:
	// comma-separated "end:unixnano" records (fetch/logtime), each saying
	// the bytes before end were written by then, in order, the last
	// reaching X-Fetch-Next.
	HeaderTimes = "X-Fetch-Times"
)

// MaxTimes bounds the records in one X-Fetch-Times header; an answer whose
// bytes need more is cut short at the last record that fits.
const MaxTimes = 512

// Info is the answer to an info request: a container attempt's output and
// exit state.
type Info struct {
	// Attempt is the container attempt described (the latest, when asked
	// for attempt=latest).
	Attempt  int   `json:"attempt"`
	Exists   bool  `json:"exists"`
	Size     int64 `json:"size"`
	Exited   bool  `json:"exited"`
	ExitCode *int  `json:"exitCode,omitempty"`
	// ExitedAt is when the container ended (the marker's mtime, by the
	// compute node's clock); nil from endpoints older than this field.
	ExitedAt *time.Time `json:"exitedAt,omitempty"`
	// Reason and Message say why a container ended without running, when
	// the job says so (ErrImagePull and the runtime's message).
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// StartedAt is when the attempt started (its start marker's mtime),
	// where the job recorded it.
	StartedAt *time.Time `json:"startedAt,omitempty"`
	// Ready and Started: the running attempt's readiness probe passes,
	// its startup probe has passed (the tunnel agent runs them; false for
	// a container without the probe, and from endpoints older than them).
	Ready   bool `json:"ready,omitempty"`
	Started bool `json:"started,omitempty"`
	// PostStarted: its postStart hook has run.
	PostStarted bool `json:"postStarted,omitempty"`
	// TailOffset is where the last tail_lines lines start, when asked.
	TailOffset *int64 `json:"tailOffset,omitempty"`
	// SinceOffset is where the first line written at or after since
	// starts, when asked.
	SinceOffset *int64 `json:"sinceOffset,omitempty"`
}

// Container is a container's latest attempt and the one before, as the
// containers request reports them.
type Container struct {
	Current  Info  `json:"current"`
	Previous *Info `json:"previous,omitempty"`
}
