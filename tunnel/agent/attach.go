package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// OnceSuffix names, beside a container's stdin FIFO, the file with the PID
// of the process that holds the FIFO open while the container runs, when
// its stdin closes after the first attach (fetch/layout.OnceSuffix).
const OnceSuffix = ".once"

// stdinStall bounds how long attach waits for a container to read what
// was typed: a pipe holds 64 KiB, and a session whose container never
// reads would otherwise hold one of the pod's sessions until it ends.
const stdinStall = 30 * time.Second

// attach writes the session's stdin to the container's stdin FIFO, which
// the job script made for a container started with stdin: true and keeps
// open between attaches. The output is not the agent's: the provider
// follows the container's log. The session ends when the provider closes
// stdin or the stream; for a container whose stdin closes after one attach
// (stdinOnce), that end also ends the holder, so the container reads an
// end of file, and removes the FIFO, so no later attach writes to it.
func attach(c Containers, st net.Conn, req tunnel.Request) tunnel.Exit {
	if c.StdinDir == "" {
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("container %q has no stdin to attach to: none of this pod's containers was started with stdin (or its job was submitted before kubectl attach had stdin: recreate the pod)", req.Container)}
	}
	if !containerName.MatchString(req.Container) {
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("no container %q", req.Container)}
	}
	fifo := filepath.Join(c.StdinDir, req.Container)
	// Non-blocking: an open for writing with no reader fails at once
	// (ENXIO) instead of waiting; no link is followed.
	f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("container %q has no stdin to attach to: it was not started with stdin, its stdin closed after its first attach (stdinOnce), or it has not started", req.Container)}
	case errors.Is(err, syscall.ENXIO):
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("container %q is not running", req.Container)}
	case err != nil:
		return tunnel.Exit{Code: -1, Error: err.Error()}
	}
	defer f.Close()
	opened, err := f.Stat()
	if err != nil || opened.Mode()&os.ModeNamedPipe == 0 {
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("container %q: its stdin is not a FIFO", req.Container)}
	}
	exit := tunnel.Exit{}
	var buf []byte
	for {
		typ, p, err := tunnel.ReadFrame(st, buf)
		if err != nil || typ == tunnel.FrameCloseStdin {
			break
		}
		buf = p[:0]
		if typ != tunnel.FrameStdin {
			continue // resizes: the container's terminal, if any, is podman's
		}
		f.SetWriteDeadline(time.Now().Add(stdinStall))
		if _, err := f.Write(p); err != nil {
			exit = tunnel.Exit{Code: -1, Error: fmt.Sprintf("container %q is not reading its stdin: %v", req.Container, err)}
			break
		}
	}
	f.Close()
	closeOnce(fifo, opened)
	return exit
}

// closeOnce ends the holder of a stdinOnce container's FIFO, the one this
// session opened (not a restarted attempt's new one at the same path), and
// removes it. The holder's PID is checked to be a process whose stdin is
// that very FIFO, so a stale file cannot make the agent signal another
// process.
func closeOnce(fifo string, opened os.FileInfo) {
	data, err := os.ReadFile(fifo + OnceSuffix)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return
	}
	got, err := os.Stat(fmt.Sprintf("/proc/%d/fd/0", pid))
	if err != nil || !os.SameFile(opened, got) {
		return
	}
	if now, err := os.Lstat(fifo); err == nil && os.SameFile(opened, now) {
		os.Remove(fifo)
		os.Remove(fifo + OnceSuffix)
	}
	syscall.Kill(pid, syscall.SIGTERM)
}
