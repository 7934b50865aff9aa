// Package tunnel is the third protocol: kubectl exec, attach and
// port-forward into a running job, without SSH and without a listening
// port on the compute nodes.
//
// An agent started by the job script inside the allocation (as the job's
// user, in the job's cgroup) connects out to the fetch endpoint and proves
// which pod it serves with that pod's agent token, a file the provider
// staged into the pod's directory (only the pod's owner and the endpoint
// can read it; it goes with the staged files when the job ends). The
// endpoint keeps the agent's connection and, when the provider asks for a
// session on that pod (with its own token, under the endpoint's tenancy
// rules), opens a stream on it and joins the two. One connection per pod,
// many streams on it (yamux).
//
// On a stream, both sides send frames: a type byte, a 4-byte big-endian
// length and at most MaxFrame bytes. The provider's first frame is a
// Request; then stdin, resize and close-stdin frames go to the agent, and
// stdout and stderr frames come back, then one Exit frame, after which
// the agent closes the stream. Port-forward streams carry Data frames
// both ways and CloseWrite for a half-close.
//
// This package is the wire format only; tunnel/agent, tunnel/hub and
// tunnel/client are the three parties. It imports nothing of ours.
package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Upgrade is the HTTP Upgrade token of the tunnel's connections: an agent's
// (GET /v1/agent/...) and a provider's session (POST .../tunnel).
const Upgrade = "slurm-vk-tunnel/1"

// MaxFrame bounds a frame's payload; a larger length is a protocol error.
const MaxFrame = 32 << 10

// Frame types.
const (
	FrameRequest    byte = 'R' // JSON Request, the provider's first frame
	FrameStdin      byte = '0'
	FrameStdout     byte = '1'
	FrameStderr     byte = '2'
	FrameResize     byte = 'W' // JSON TermSize
	FrameCloseStdin byte = 'C' // no more stdin
	FrameExit       byte = 'X' // JSON Exit, the agent's last frame
	FrameData       byte = 'D' // port-forward bytes, either way
	FrameCloseWrite byte = 'H' // port-forward half-close, either way
)

// Request is what a session asks of the agent.
type Request struct {
	// Kind is "exec", "attach", "port-forward" or "hook" (a lifecycle
	// hook's Handler, run against the container: preStop).
	Kind string `json:"kind"`
	// Container names the pod's container (exec, attach).
	Container string `json:"container,omitempty"`
	// Command is exec's argv, run inside the container.
	Command []string `json:"command,omitempty"`
	// Stdin says stdin frames will come; TTY asks for a terminal.
	Stdin bool `json:"stdin,omitempty"`
	TTY   bool `json:"tty,omitempty"`
	// Port is port-forward's TCP port, on the job's node (or inside the
	// container's network namespace where it has one).
	Port int `json:"port,omitempty"`
	// Hook is the hook's handler (kind hook).
	Hook *Handler `json:"hook,omitempty"`
}

// TermSize is a terminal's size in characters.
type TermSize struct {
	Width  uint16 `json:"width"`
	Height uint16 `json:"height"`
}

// Exit ends an exec or attach session: the command's exit code, or why
// it could not run (Error; Code is then -1).
type Exit struct {
	Code  int    `json:"code"`
	Error string `json:"error,omitempty"`
}

// ErrFrameTooLarge is a frame longer than MaxFrame.
var ErrFrameTooLarge = errors.New("tunnel: frame too large")

// WriteFrame writes one frame. Callers serialize writes to one stream.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	if len(payload) > MaxFrame {
		return ErrFrameTooLarge
	}
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil || len(payload) == 0 {
		return err // no empty write: on a synchronous pipe it would wait for a read that never comes
	}
	_, err := w.Write(payload)
	return err
}

// WriteJSON writes v as one frame of type typ.
func WriteJSON(w io.Writer, typ byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return WriteFrame(w, typ, b)
}

// ReadFrame reads one frame into buf (grown as needed, up to MaxFrame)
// and returns its type and payload, which aliases buf.
func ReadFrame(r io.Reader, buf []byte) (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, n)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, fmt.Errorf("tunnel: frame cut short: %w", err)
	}
	return hdr[0], buf, nil
}

// FrameWriter is an io.Writer that sends what is written as frames of one
// type, at most MaxFrame each. Safe for concurrent use with other
// FrameWriters on the same stream when they share mu.
type FrameWriter struct {
	W   io.Writer
	Typ byte
	Mu  interface {
		Lock()
		Unlock()
	}
}

func (f *FrameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxFrame)]
		f.Mu.Lock()
		err := WriteFrame(f.W, f.Typ, chunk)
		f.Mu.Unlock()
		if err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}
