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
)

// Info is the answer to an info request: a container attempt's output and
// exit state.
type Info struct {
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
	// TailOffset is where the last tail_lines lines start, when asked.
	TailOffset *int64 `json:"tailOffset,omitempty"`
}
