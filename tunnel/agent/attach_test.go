package agent

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// container starts cat as a container whose stdin is the FIFO, held open
// by a sleep as the job script does; once writes the holder's PID beside
// it. It returns cat's output so far and a wait for cat's end.
func container(t *testing.T, dir string, once bool) (func() string, func() error) {
	t.Helper()
	fifo := filepath.Join(dir, "app")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	rw, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("sleep", "60")
	holder.Stdin = rw
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	if once {
		os.WriteFile(fifo+OnceSuffix, []byte(strconv.Itoa(holder.Process.Pid)+"\n"), 0o600)
	}
	r, err := os.Open(fifo) // the holder is a writer: this does not wait
	if err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(t.TempDir(), "out") // a file: no copying goroutine to race with
	w, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cat := exec.Command("cat")
	cat.Stdin, cat.Stdout = r, w
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	t.Cleanup(func() { cat.Process.Kill(); cat.Wait() })
	return func() string { b, _ := os.ReadFile(outFile); return string(b) }, cat.Wait
}

// session runs attach with the frames given, as the provider sends them.
func session(t *testing.T, c Containers, frames ...[]byte) tunnel.Exit {
	t.Helper()
	agentEnd, provider := net.Pipe()
	done := make(chan tunnel.Exit, 1)
	go func() { done <- attach(c, agentEnd, tunnel.Request{Kind: "attach", Container: "app", Stdin: true}) }()
	go func() { // an attach that refuses reads nothing
		for _, f := range frames {
			if tunnel.WriteFrame(provider, f[0], f[1:]) != nil {
				return
			}
		}
	}()
	select {
	case exit := <-done:
		provider.Close()
		return exit
	case <-time.After(30 * time.Second):
		t.Fatal("attach did not end after the provider closed stdin")
	}
	return tunnel.Exit{}
}

func stdin(s string) []byte { return append([]byte{tunnel.FrameStdin}, s...) }

var closeStdin = []byte{tunnel.FrameCloseStdin}

// TestAttach: what attach sends reaches the container's stdin; with
// stdinOnce the first session's end is the container's end of file and
// later sessions find no stdin; without it, stdin stays open.
func TestAttach(t *testing.T) {
	t.Run("stdinOnce", func(t *testing.T) {
		dir := t.TempDir()
		out, wait := container(t, dir, true)
		if exit := session(t, Containers{StdinDir: dir}, stdin("one\n"), stdin("two\n"), closeStdin); exit != (tunnel.Exit{}) {
			t.Fatalf("attach: %+v", exit)
		}
		ended := make(chan error, 1)
		go func() { ended <- wait() }()
		select {
		case err := <-ended:
			if err != nil || out() != "one\ntwo\n" {
				t.Errorf("the container read %q and ended with %v", out(), err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the container read no end of file after the first attach")
		}
		if exit := session(t, Containers{StdinDir: dir}, stdin("three\n")); !strings.Contains(exit.Error, "has no stdin") {
			t.Errorf("a second attach: %+v, want a refusal", exit)
		}
	})
	t.Run("open between attaches", func(t *testing.T) {
		dir := t.TempDir()
		out, _ := container(t, dir, false)
		for _, word := range []string{"first\n", "second\n"} {
			if exit := session(t, Containers{StdinDir: dir}, stdin(word), closeStdin); exit != (tunnel.Exit{}) {
				t.Fatalf("attach: %+v", exit)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); len(out()) < len("first\nsecond\n") && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		}
		if _, err := os.Stat(filepath.Join(dir, "app")); err != nil || out() != "first\nsecond\n" {
			t.Errorf("the container read %q; the FIFO: %v", out(), err)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		dir := t.TempDir()
		for _, tt := range []struct {
			c    Containers
			want string
		}{
			{Containers{}, "none of this pod's containers was started with stdin"},
			{Containers{StdinDir: dir}, "has no stdin"},
		} {
			if exit := session(t, tt.c); !strings.Contains(exit.Error, tt.want) {
				t.Errorf("%+v: %+v, want %q", tt.c, exit, tt.want)
			}
		}
		// A FIFO nobody reads: the container is not running.
		syscall.Mkfifo(filepath.Join(dir, "app"), 0o600)
		if exit := session(t, Containers{StdinDir: dir}); !strings.Contains(exit.Error, "not running") {
			t.Errorf("a FIFO with no reader: %+v", exit)
		}
		// A link where the FIFO belongs is not followed.
		os.Remove(filepath.Join(dir, "app"))
		os.Symlink("/dev/null", filepath.Join(dir, "app"))
		if exit := session(t, Containers{StdinDir: dir}); exit.Error == "" {
			t.Errorf("a link to /dev/null was written: %+v", exit)
		}
	})
}

// TestCloseOnceChecksTheHolder: a .once file naming a process whose stdin
// is not the FIFO (stale, or written by the job to aim the agent at
// another process) signals nothing.
func TestCloseOnceChecksTheHolder(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "app")
	syscall.Mkfifo(fifo, 0o600)
	// A process that says which signals reach it, in signal order.
	other := exec.Command("sh", "-c", `trap 'echo TERM' TERM; trap 'echo WINCH' WINCH; echo ready; while :; do sleep 0.05; done`)
	out, err := other.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	lines := bufio.NewScanner(out)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("the stand-in holder did not start: %q", lines.Text())
	}
	os.WriteFile(fifo+OnceSuffix, []byte(strconv.Itoa(other.Process.Pid)), 0o600)
	fi, err := os.Stat(fifo)
	if err != nil {
		t.Fatal(err)
	}
	closeOnce(fifo, fi)
	// A WINCH after it: a TERM sent before would be handled first (traps
	// run in signal order), so what comes before WINCH is the verdict.
	other.Process.Signal(syscall.SIGWINCH)
	for lines.Scan() && lines.Text() != "WINCH" {
		if lines.Text() == "TERM" {
			t.Error("closeOnce signalled a process that does not hold the FIFO")
		}
	}
	if _, err := os.Stat(fifo); err != nil {
		t.Errorf("closeOnce removed the FIFO of a holder it could not verify: %v", err)
	}
}
