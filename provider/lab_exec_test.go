package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	corev1 "k8s.io/api/core/v1"
	utilexec "k8s.io/utils/exec"

	"github.com/slurmkube/slurm-vk/internal/testbin"
	"github.com/slurmkube/slurm-vk/slurmclient"
	tunnelclient "github.com/slurmkube/slurm-vk/tunnel/client"
)

// TestLabExec: kubectl exec's provider call into a real job. The job
// script starts the real agent (built here, on the shared directory the
// compute nodes see), which connects out to the real fetch endpoint; the
// command runs in the container's environment and directory, on the
// job's node, and its output and exit code come back.
func TestLabExec(t *testing.T) {
	r := newLabRig(t)
	r.withAgent(t)
	p := r.start()
	ctx := r.ctx(t)
	c := sh("main", "sleep 300")
	c.WorkingDir, c.Env = "/tmp", []corev1.EnvVar{{Name: "GREETING", Value: "hello from the pod"}}
	pod := labPod("exec", c)
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, pod, "Running", phase(corev1.PodRunning))
	job := p.jobOf(t, pod)

	// The agent connects once the job runs: exec waits for it a little,
	// as a user retrying would.
	run := func(cmd []string, stdin string) (string, string, error) {
		var out, errb bytes.Buffer
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out.Reset()
			errb.Reset()
			io := &attachIO{stdout: nopCloser{&out}, stderr: nopCloser{&errb}}
			if stdin != "" {
				io.stdin = strings.NewReader(stdin)
			}
			err := p.RunInContainer(ctx, pod.Namespace, pod.Name, "main", cmd, io)
			if err == nil || !strings.Contains(err.Error(), "no agent") || time.Now().After(deadline) {
				return out.String(), errb.String(), err
			}
		}
	}
	t.Run("output, env, working directory, the job's node, exit code 3", func(t *testing.T) {
		out, errOut, err := run([]string{"sh", "-c", `echo "$GREETING"; pwd; echo "$SLURM_JOB_ID"; echo oops >&2; exit 3`}, "")
		var code utilexec.CodeExitError
		if !errors.As(err, &code) || code.ExitStatus() != 3 {
			t.Fatalf("exec: %v, want exit code 3", err)
		}
		if want := "hello from the pod\n/tmp\n" + fmt.Sprint(job) + "\n"; out != want {
			t.Errorf("stdout %q, want %q", out, want)
		}
		if errOut != "oops\n" {
			t.Errorf("stderr %q", errOut)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		out, _, err := run([]string{"tr", "a-z", "A-Z"}, "shout\n")
		if err != nil || out != "SHOUT\n" {
			t.Errorf("exec tr: %q, %v", out, err)
		}
	})
	t.Run("a container that is not there", func(t *testing.T) {
		err := p.RunInContainer(ctx, pod.Namespace, pod.Name, "sidecar", []string{"true"}, &attachIO{})
		if err == nil || !strings.Contains(err.Error(), `container "sidecar" is not running`) {
			t.Errorf("exec in a missing container: %v", err)
		}
	})
	for _, rt := range []string{RuntimePodman, RuntimeCharliecloud} {
		t.Run(rt+": inside the image, with the container's env, directory and file system", func(t *testing.T) {
			r.lab.RequireRuntime(t, rt)
			// The marker is in the container's own writable layer (podman's
			// /tmp, as the container runs as the job's user; Charliecloud's
			// -W overlay, whose /tmp would be the node's): only a command
			// inside that very container sees it. PID 1 of a container ignores a TERM it has
			// no handler for: the trap lets the delete end it (see the note
			// on #16).
			marker := map[string]string{RuntimePodman: "/tmp/svk-marker", RuntimeCharliecloud: "/etc/svk-marker"}[rt]
			c := corev1.Container{Name: "app", Image: r.lab.Registry + "/lab/busybox:1",
				Command:    []string{"sh", "-c", `echo "$$" >` + marker + `; trap "exit 0" TERM; sleep 300 & wait`},
				WorkingDir: "/tmp", Env: []corev1.EnvVar{{Name: "GREETING", Value: "hello from the image"}}}
			pod := labPod("exec-"+rt[:2], c)
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			r.runningPod(t, p, pod)
			var out, errOut bytes.Buffer
			for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(300 * time.Millisecond) {
				out.Reset()
				errOut.Reset()
				err := p.RunInContainer(ctx, pod.Namespace, pod.Name, "app", []string{"sh", "-c", `echo "$GREETING"; pwd; cat ` + marker + ` || exit 4; exit 3`},
					&attachIO{stdout: nopCloser{&out}, stderr: nopCloser{&errOut}})
				var code utilexec.CodeExitError
				if errors.As(err, &code) && code.ExitStatus() == 3 {
					break
				}
				// Until the runtime has started the container: no agent yet,
				// the runtime not yet running it, or the marker not yet written.
				if time.Now().After(deadline) {
					t.Fatalf("exec into the %s container: %v: %s%s", rt, err, out.String(), errOut.String())
				}
			}
			lines := strings.Split(out.String(), "\n")
			if len(lines) != 4 || lines[0] != "hello from the image" || lines[1] != "/tmp" || lines[2] == "" {
				t.Errorf("exec printed %q (stderr %q), want the image's greeting, /tmp and the container's marker", out.String(), errOut.String())
			}
		})
	}
	t.Run("attach: stdin through the agent, output from the log", func(t *testing.T) {
		// once: stdinOnce, the container reads an end of file when the
		// first attach's stdin ends, and runs on. open: stdin stays open
		// from one attach to the next.
		once := sh("once", `while read l; do echo "got $l"; done; echo eof; sleep 300`)
		once.Stdin, once.StdinOnce = true, true
		open := sh("open", `while read l; do echo "got $l"; done; echo eof; sleep 300`)
		open.Stdin = true
		pod := labPod("attach", once, open)
		r.runningPod(t, p, pod)
		// attach runs an attach with what stdin gives, until the output
		// holds want (then it ends the attach, as a user's ^C) or a minute
		// has passed; it returns the output.
		attach := func(container string, stdin io.Reader, want string) string {
			t.Helper()
			out := &lockedBuffer{}
			actx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- p.AttachToContainer(actx, pod.Namespace, pod.Name, container, &attachIO{stdin: stdin, stdout: nopCloser{out}})
			}()
			if !out.waitFor(want, time.Minute) {
				t.Errorf("attach to %s: the output was %q, want %q in it", container, out.String(), want)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("attach to %s ended with %v", container, err)
			}
			return out.String()
		}
		if out := attach("once", strings.NewReader("one\ntwo\n"), "eof\n"); !strings.HasSuffix(out, "got one\ngot two\neof\n") {
			t.Errorf("attach to the stdinOnce container: %q, want both lines and the end of its stdin", out)
		}
		second, cancel := context.WithTimeout(ctx, 30*time.Second) // were it let in, it would follow the output
		defer cancel()
		err := p.AttachToContainer(second, pod.Namespace, pod.Name, "once", &attachIO{stdin: strings.NewReader("three\n"), stdout: nopCloser{&lockedBuffer{}}})
		if err == nil || !strings.Contains(err.Error(), "has no stdin") {
			t.Errorf("a second attach to the running container whose stdin closed: %v, want a refusal", err)
		}

		// Three attaches to the open one, each ending its stdin: the
		// container reads every line and no end of file.
		var all string
		for _, word := range []string{"first", "second", "third"} {
			all += attach("open", strings.NewReader(word+"\n"), "got "+word+"\n")
		}
		if strings.Contains(all, "eof") {
			t.Errorf("the container read an end of file between attaches: %q", all)
		}
		err = p.AttachToContainer(ctx, pod.Namespace, pod.Name, "open", &attachIO{stdin: strings.NewReader(""), stdout: nopCloser{&lockedBuffer{}}, tty: true})
		if err == nil || !strings.Contains(err.Error(), "gives it no terminal") {
			t.Errorf("attach -t with runtime none: %v, want a refusal", err)
		}
		if err := p.AttachToContainer(ctx, pod.Namespace, pod.Name, "main", &attachIO{}); err == nil || !strings.Contains(err.Error(), "not in pod") {
			t.Errorf("attach to a container that is not there: %v", err)
		}
	})
	for _, rt := range []string{RuntimePodman, RuntimeCharliecloud} {
		t.Run("attach: "+rt, func(t *testing.T) {
			r.lab.RequireRuntime(t, rt)
			c := corev1.Container{Name: "app", Image: r.lab.Registry + "/lab/busybox:1", Stdin: true, StdinOnce: true,
				Command: []string{"sh", "-c", `read l; if [ -t 0 ]; then echo terminal; fi; echo "got $l"`}}
			// podman gives a container with tty a terminal fed by its stdin.
			c.TTY = rt == RuntimePodman
			pod := labPod("attach-"+rt[:2], c)
			pod.Annotations = map[string]string{AnnotationRuntime: rt}
			r.runningPod(t, p, pod)
			out := &lockedBuffer{}
			err := p.AttachToContainer(ctx, pod.Namespace, pod.Name, "app", &attachIO{stdin: strings.NewReader("hello\n"), stdout: nopCloser{out}, tty: c.TTY})
			got := strings.ReplaceAll(out.String(), "\r", "")
			// A terminal echoes what is typed.
			want := map[string]string{RuntimePodman: "hello\nterminal\ngot hello\n", RuntimeCharliecloud: "got hello\n"}[rt]
			if err != nil || !strings.HasSuffix(got, want) {
				t.Errorf("attach: %v: %q, want it to end with %q", err, out.String(), want)
			}
		})
	}
	t.Run("after the delete: the job ends, exec says the pod is not running", func(t *testing.T) {
		if err := p.DeletePod(ctx, pod); err != nil {
			t.Fatal(err)
		}
		r.waitJobEnd(t, job)
		if err := p.RunInContainer(ctx, pod.Namespace, pod.Name, "main", []string{"true"}, &attachIO{}); err == nil {
			t.Error("exec into a deleted pod worked")
		}
	})
}

// withAgent has the rig's jobs start the real agent (built here, on the
// shared directory the compute nodes see) and its provider reach it.
func (r *labRig) withAgent(t *testing.T) {
	agent := filepath.Join(r.cfg.SharedRoot, "slurm-vk-agent")
	testbin.Copy(t, "slurm-vk-agent", agent)
	r.cfg.Agent, r.cfg.AgentURL = agent, r.fetchURL
	r.cfg.Tunnel = tunnelclient.New(tunnelclient.Config{URL: r.fetchURL, TokenFile: r.fetchToken})
}

// runningPod creates the pod, waits until it runs, and deletes it when
// the test ends, waiting for its job to end in Slurm: the delete's cancel
// after the grace period comes from this test's provider, and a job left
// running would hold a node from the next test.
func (r *labRig) runningPod(t *testing.T, p *Provider, pod *corev1.Pod) {
	t.Helper()
	if err := p.CreatePod(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		job := p.jobOf(t, pod)
		p.DeletePod(context.Background(), pod)
		r.waitJobEnd(t, job)
	})
	r.waitFor(t, pod, "Running", phase(corev1.PodRunning))
}

// waitJobEnd waits until Slurm says the job has ended.
func (r *labRig) waitJobEnd(t *testing.T, job slurmclient.JobID) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		j, err := r.slurm.Job(context.Background(), job)
		if err == nil && j.State.Terminal() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d did not end after the delete", job)
		}
	}
}

// jobOf is the pod's job ID as the provider tracks it.
func (p *Provider) jobOf(t *testing.T, pod *corev1.Pod) slurmclient.JobID {
	t.Helper()
	st, err := p.get(pod.Namespace, pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return st.job
}

// attachIO is kubectl exec's streams as virtual-kubelet hands them over.
type attachIO struct {
	stdin          io.Reader
	stdout, stderr io.WriteCloser
	tty            bool
	resize         chan api.TermSize
}

func (a *attachIO) Stdin() io.Reader            { return a.stdin }
func (a *attachIO) Stdout() io.WriteCloser      { return a.stdout }
func (a *attachIO) Stderr() io.WriteCloser      { return a.stderr }
func (a *attachIO) TTY() bool                   { return a.tty }
func (a *attachIO) Resize() <-chan api.TermSize { return a.resize }

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// lockedBuffer is a bytes.Buffer written by one goroutine and read by
// another.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the buffer holds s.
func (b *lockedBuffer) waitFor(s string, d time.Duration) bool {
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(b.String(), s) {
			return true
		}
	}
	return false
}
