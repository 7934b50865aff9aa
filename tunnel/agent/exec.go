package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// Containers says how the agent enters the pod's containers.
type Containers struct {
	// PIDDir holds a file per running container, named for it, with the
	// PID of its main process: the job script writes it as the container
	// starts. The command runs with that process's environment and
	// working directory.
	PIDDir string
	// StdinDir holds the FIFO that each container started with stdin
	// reads (named for it; fetch/layout.StdinDir), which attach writes.
	StdinDir string
	// Runtime is the job's container runtime: "none" (the command runs
	// beside the container's process, as it does), "podman" (podman exec
	// into the job's container) or "charliecloud" (nsenter into the
	// namespaces ch-run made); the others are refused by name.
	Runtime string
}

var containerName = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// process is a running container's main process, as /proc shows it.
type process struct {
	pid       int
	env       []string
	dir       string
	runtime   string
	container string
}

// find reads the container's PID file and its process's env and cwd.
func (c Containers) find(name string) (*process, error) {
	switch c.Runtime {
	case "", "none", "podman", "charliecloud":
	default:
		return nil, fmt.Errorf("exec into runtime %s is not supported yet (runtimes none, podman and charliecloud are)", c.Runtime)
	}
	if !containerName.MatchString(name) {
		return nil, fmt.Errorf("no container %q", name)
	}
	data, err := os.ReadFile(filepath.Join(c.PIDDir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("container %q is not running", name)
	} else if err != nil {
		return nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 1 {
		return nil, fmt.Errorf("container %q: bad PID file", name)
	}
	environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return nil, fmt.Errorf("container %q is not running", name)
	}
	dir, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return nil, fmt.Errorf("container %q is not running", name)
	}
	var env []string
	for _, kv := range strings.Split(string(environ), "\x00") {
		if kv != "" {
			env = append(env, kv)
		}
	}
	return &process{pid: pid, env: env, dir: dir, runtime: c.Runtime, container: name}, nil
}

// command builds argv's process as the container's: its env, its
// working directory, argv[0] looked up in its PATH.
func (p *process) command(ctx context.Context, argv []string, stdin, tty bool) (*exec.Cmd, error) {
	if len(argv) == 0 {
		return nil, errors.New("no command")
	}
	switch p.runtime {
	case "podman":
		return p.podmanExec(ctx, argv, stdin, tty)
	case "charliecloud":
		return p.charliecloudExec(argv)
	}
	path := argv[0]
	if !strings.Contains(path, "/") {
		var found bool
		for _, kv := range p.env {
			if dirs, ok := strings.CutPrefix(kv, "PATH="); ok {
				for _, d := range filepath.SplitList(dirs) {
					if !filepath.IsAbs(d) {
						continue // relative to the agent's directory, not the container's
					}
					cand := filepath.Join(d, path)
					if fi, err := os.Stat(cand); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
						path, found = cand, true
						break
					}
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%q: executable file not found in the container's $PATH", argv[0])
		}
	}
	cmd := &exec.Cmd{Path: path, Args: argv, Env: p.env, Dir: p.dir}
	return cmd, nil
}

// podmanExec is `podman exec` into the job's container: the PID file's
// process is the job's `podman run`, whose binary and environment (HOME,
// XDG_RUNTIME_DIR: where rootless podman keeps its containers) it reuses;
// the container, named as the job script names it, has its own env and
// working directory.
func (p *process) podmanExec(ctx context.Context, argv []string, stdin, tty bool) (*exec.Cmd, error) {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.pid))
	if err != nil || filepath.Base(exe) != "podman" {
		return nil, &startingError{fmt.Sprintf("container %q is not running under podman yet", p.container)}
	}
	// The job names its containers by its ID: the agent's own (the
	// job's), not podman's, which the pod's env could have changed.
	job := os.Getenv("SLURM_JOB_ID")
	if job == "" {
		return nil, fmt.Errorf("container %q: the agent runs outside a Slurm job (no SLURM_JOB_ID)", p.container)
	}
	args := []string{exe, "exec"}
	if stdin {
		args = append(args, "-i")
	}
	if tty {
		args = append(args, "-t")
	}
	name := "slurm-vk-" + job + "-" + p.container
	// podman exec needs the container running, which it is a moment
	// after the job ran podman run.
	inspect := exec.CommandContext(ctx, exe, "container", "inspect", "--format", "{{.State.Running}}", name)
	inspect.Env, inspect.Dir = p.env, "/"
	if out, err := inspect.Output(); err != nil || strings.TrimSpace(string(out)) != "true" {
		return nil, &startingError{fmt.Sprintf("container %q is not running under podman yet", p.container)}
	}
	args = append(append(args, name), argv...)
	return &exec.Cmd{Path: exe, Args: args, Env: p.env, Dir: "/"}, nil
}

// charliecloudExec enters the namespaces of the container's process:
// ch-run makes an unprivileged user namespace and a mount namespace whose
// root is the image (with its write overlay and the pod's binds), then
// execs the container's command in the same process, so the PID file's
// process is the container's once ch-run has set it up. A new ch-run of
// the same image would see neither the overlay's writes nor be the same
// container. nsenter (util-linux) does the setns, which a Go process,
// being multi-threaded, cannot do for a user namespace; it looks argv[0]
// up in the container's PATH, inside its root.
func (p *process) charliecloudExec(argv []string) (*exec.Cmd, error) {
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", p.pid))
	if err != nil {
		return nil, fmt.Errorf("container %q is not running", p.container)
	}
	if ours, _ := os.Readlink("/proc/self/ns/user"); theirs == ours {
		return nil, &startingError{fmt.Sprintf("container %q is not running under charliecloud yet", p.container)}
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, errors.New("exec into a charliecloud container needs nsenter (util-linux) on the job's node, and it is not on the agent's PATH")
	}
	args := append([]string{nsenter, "--target", strconv.Itoa(p.pid), "--user", "--mount", "--preserve-credentials", "--root", "--wd", "--"}, argv...)
	return &exec.Cmd{Path: nsenter, Args: args, Env: p.env, Dir: "/"}, nil
}

// serveStream serves one session.
func serveStream(ctx context.Context, cfg Config, st net.Conn) {
	defer st.Close()
	typ, payload, err := tunnel.ReadFrame(st, nil)
	if err != nil {
		return
	}
	var req tunnel.Request
	if typ != tunnel.FrameRequest || json.Unmarshal(payload, &req) != nil {
		tunnel.WriteJSON(st, tunnel.FrameExit, tunnel.Exit{Code: -1, Error: "the session did not start with a request"})
		return
	}
	switch req.Kind {
	case "exec":
		// Under the output's lock: a terminal's output may still be
		// copied when the command has ended, and frames must not mix.
		var mu sync.Mutex
		exit := runExec(ctx, cfg, st, req, &mu)
		mu.Lock()
		tunnel.WriteJSON(st, tunnel.FrameExit, exit)
		mu.Unlock()
	case "attach":
		tunnel.WriteJSON(st, tunnel.FrameExit, attach(cfg.Containers, st, req))
	case "port-forward":
		tunnel.WriteJSON(st, tunnel.FrameExit, portForward(ctx, st, req))
	case "hook":
		tunnel.WriteJSON(st, tunnel.FrameExit, hook(ctx, cfg.Containers, st, req))
	default:
		tunnel.WriteJSON(st, tunnel.FrameExit, tunnel.Exit{Code: -1, Error: fmt.Sprintf("%s is not supported by this agent", req.Kind)})
	}
}

// startingError: the container's runtime is still starting it (the job
// marked it started as it ran the runtime); worth a short wait.
type startingError struct{ msg string }

func (e *startingError) Error() string { return e.msg }

// startWait bounds the wait for a runtime to start a container whose
// image is already pulled (podman creates and starts it, ch-run enters
// its namespaces): seconds at most.
var startWait, startPoll = time.Minute, 100 * time.Millisecond

// commandFor finds the container and builds argv's command in it, waiting
// (up to startWait) while its runtime is still starting it.
func commandFor(ctx context.Context, cs Containers, req tunnel.Request) (*exec.Cmd, error) {
	ctx, cancel := context.WithTimeout(ctx, startWait)
	defer cancel()
	for {
		proc, err := cs.find(req.Container)
		if err != nil {
			return nil, err
		}
		cmd, err := proc.command(ctx, req.Command, req.Stdin, req.TTY)
		var starting *startingError
		if !errors.As(err, &starting) {
			return cmd, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(startPoll):
		}
	}
}

// runExec runs req's command in its container with the session's
// streams, and returns how it ended. The session closing ends it.
func runExec(ctx context.Context, cfg Config, st net.Conn, req tunnel.Request, mu *sync.Mutex) tunnel.Exit {
	cmd, err := commandFor(ctx, cfg.Containers, req)
	if err != nil {
		return tunnel.Exit{Code: -1, Error: err.Error()}
	}
	stdout := &tunnel.FrameWriter{W: st, Typ: tunnel.FrameStdout, Mu: mu}
	stderr := &tunnel.FrameWriter{W: st, Typ: tunnel.FrameStderr, Mu: mu}
	var stdin io.WriteCloser
	var term *os.File
	var output sync.WaitGroup
	if req.TTY {
		term, err = pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 24})
		if err != nil {
			return tunnel.Exit{Code: -1, Error: err.Error()}
		}
		defer term.Close()
		stdin = term
		output.Add(1)
		go func() { defer output.Done(); io.Copy(stdout, term) }()
	} else {
		if req.Stdin {
			if stdin, err = cmd.StdinPipe(); err != nil {
				return tunnel.Exit{Code: -1, Error: err.Error()}
			}
		}
		cmd.Stdout, cmd.Stderr = stdout, stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return tunnel.Exit{Code: -1, Error: err.Error()}
		}
	}
	// Frames from the provider: stdin, resizes; the session ending kills
	// the command's process group.
	ended := make(chan struct{})
	go func() {
		var buf []byte
		for {
			typ, p, err := tunnel.ReadFrame(st, buf)
			if err != nil {
				select {
				case <-ended:
				default:
					syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				}
				return
			}
			buf = p[:0]
			switch typ {
			case tunnel.FrameStdin:
				if stdin != nil {
					stdin.Write(p)
				}
			case tunnel.FrameCloseStdin:
				if stdin != nil && !req.TTY {
					stdin.Close()
				} else if term != nil {
					term.Write([]byte{4}) // ^D: end of input at the terminal
				}
			case tunnel.FrameResize:
				var ts tunnel.TermSize
				if term != nil && json.Unmarshal(p, &ts) == nil {
					pty.Setsize(term, &pty.Winsize{Cols: ts.Width, Rows: ts.Height})
				}
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer stop()
	err = cmd.Wait()
	close(ended)
	if term != nil {
		// The terminal's output drains once every process holding it has
		// ended; a background process that keeps it open is not waited for.
		done := make(chan struct{})
		go func() { output.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
	}
	return exitOf(cmd, err)
}

// exitOf is the command's exit code, 128+n for a signal as a shell says.
func exitOf(cmd *exec.Cmd, err error) tunnel.Exit {
	if cmd.ProcessState == nil {
		return tunnel.Exit{Code: -1, Error: err.Error()}
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return tunnel.Exit{Code: 128 + int(ws.Signal())}
	}
	return tunnel.Exit{Code: cmd.ProcessState.ExitCode()}
}
