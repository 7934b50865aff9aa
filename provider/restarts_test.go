package provider

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	fetchclient "github.com/slurmkube/slurm-vk/fetch/client"
	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/server"
)

// restartRig runs job scripts with bash on this host (runtime none), with a
// one-second back-off and the test binary as slurm-vk-logtime.
type restartRig struct {
	dir string
	cfg TranslateConfig
}

func newRestartRig(t *testing.T) *restartRig {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := filepath.Join(dir, "bin", DefaultLogTimeHelper)
	os.MkdirAll(filepath.Dir(helper), 0o755)
	if err := os.Symlink(self, helper); err != nil {
		t.Fatal(err)
	}
	cfg := testCfg
	cfg.SharedRoot = filepath.Join(dir, "shared")
	cfg.RestartBackoff, cfg.MaxRestartBackoff, cfg.LogTimeHelper = time.Second, 2*time.Second, helper
	return &restartRig{dir: dir, cfg: cfg}
}

// start starts pod's script; wait for it with cmd.Wait.
func (r *restartRig) start(t *testing.T, pod *corev1.Pod) *exec.Cmd {
	t.Helper()
	plan, err := Translate(pod, r.cfg, lookups)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(PodRef(pod).Path(r.cfg.SharedRoot), 0o700)
	cmd := exec.Command("bash", "-c", plan.Spec.Script)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "COUNT=" + filepath.Join(r.dir, pod.Name+".count")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	return cmd
}

func (r *restartRig) file(pod *corev1.Pod, elem ...string) string {
	b, err := os.ReadFile(PodRef(pod).Path(r.cfg.SharedRoot, elem...))
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b)
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// failTwice fails on its first two attempts and succeeds on the third,
// counting attempts in $COUNT.
var failTwice = corev1.Container{Name: "main", Command: []string{"sh", "-c",
	`n=$(cat "$COUNT" 2>/dev/null || echo 0); echo $((n + 1)) >"$COUNT"; echo "attempt $n"; sleep 0.3; [ "$n" -ge 2 ]`}}

// TestScriptRestartsOnFailure: restartPolicy OnFailure restarts a failing
// container in place, each attempt with its own log, start, times and exit
// marker; only the latest two attempts are kept; the job succeeds with
// the last attempt; the fetch endpoint reports the attempts.
func TestScriptRestartsOnFailure(t *testing.T) {
	r := newRestartRig(t)
	pod := basePod("onfailure", failTwice)
	pod.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	began := time.Now()
	if err := r.start(t, pod).Wait(); err != nil {
		t.Fatalf("job: %v, want success on the third attempt", err)
	}
	// Back-off 1 s, then 2 s: the third attempt cannot start before 3 s.
	if d := time.Since(began); d < 3*time.Second {
		t.Errorf("three attempts in %v: the back-off (1 s, 2 s) was not waited", d)
	}
	for _, c := range []struct{ file, want string }{
		{layout.LogFile("main", 1), "attempt 1\n"}, {layout.ExitFile("main", 1), "1\n"},
		{layout.LogFile("main", 2), "attempt 2\n"}, {layout.ExitFile("main", 2), "0\n"},
		{layout.StartFile("main", 2), ""},
	} {
		if got := r.file(pod, c.file); got != c.want {
			t.Errorf("%s = %q, want %q", c.file, got, c.want)
		}
	}
	for _, k := range layout.AttemptKinds {
		if _, err := os.Stat(PodRef(pod).Path(r.cfg.SharedRoot, "main", layout.AttemptName("0", k))); !os.IsNotExist(err) {
			t.Errorf("attempt 0's %s is kept (%v): only the latest two attempts should be", k, err)
		}
	}
	if fi, err := os.Stat(PodRef(pod).Path(r.cfg.SharedRoot, layout.TimesFile("main", 2))); err != nil || fi.Size() == 0 {
		t.Errorf("attempt 2's time index: %v (size %v); the helper did not run", err, fi)
	}

	tokenFile := filepath.Join(r.dir, "token")
	os.WriteFile(tokenFile, []byte("t"), 0o600)
	url := fetchtest.Start(t, server.Config{Root: r.cfg.SharedRoot, TokenFile: tokenFile})
	c, err := fetchclient.New(fetchclient.Config{URL: url, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := c.Containers(context.Background(), PodRef(pod), []string{"main"})
	if err != nil {
		t.Fatal(err)
	}
	m := cs["main"]
	if m.Current.Attempt != 2 || !m.Current.Exited || *m.Current.ExitCode != 0 || m.Current.StartedAt == nil ||
		m.Previous == nil || m.Previous.Attempt != 1 || *m.Previous.ExitCode != 1 {
		t.Errorf("containers: %+v, previous %+v", m.Current, m.Previous)
	}
	// What the script wrote, read back through the endpoint, with the
	// times its helper recorded.
	for attempt, want := range map[int]string{1: "attempt 1\n", 2: "attempt 2\n"} {
		rc, err := c.Logs(context.Background(), PodRef(pod), "main", fetchclient.LogOptions{Attempt: attempt, TailLines: -1, Timestamps: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		at, line, _ := strings.Cut(string(b), " ")
		ts, perr := time.Parse(time.RFC3339Nano, at)
		if err != nil || perr != nil || line != want || ts.Before(began) || ts.After(time.Now()) {
			t.Errorf("attempt %d through the endpoint: %q (%v), want %q stamped during the job", attempt, b, err, want)
		}
	}
}

// TestScriptNeverRestarts: restartPolicy Never runs one attempt and the
// job ends with its code; an init container that fails ends the job.
func TestScriptNeverRestarts(t *testing.T) {
	r := newRestartRig(t)
	pod := basePod("never", failTwice)
	if err := r.start(t, pod).Wait(); exitCode(err) != 1 {
		t.Errorf("job: %v, want exit 1", err)
	}
	if got := r.file(pod, layout.LogFile("main", 1)); !strings.HasPrefix(got, "<") {
		t.Errorf("a second attempt ran: %q", got)
	}
}

// TestScriptInitRestarts: under OnFailure (and Always), an init container
// that fails is restarted until it succeeds, then the containers run.
func TestScriptInitRestarts(t *testing.T) {
	r := newRestartRig(t)
	init := failTwice
	init.Name = "init"
	pod := basePod("init", corev1.Container{Name: "main", Command: []string{"echo", "main ran"}})
	pod.Spec.InitContainers = []corev1.Container{init}
	pod.Spec.RestartPolicy = corev1.RestartPolicyAlways
	cmd := r.start(t, pod)
	deadline := time.Now().Add(time.Minute) // generous: only a hang fails
	for r.file(pod, layout.LogFile("main", 0)) != "main ran\n" {
		if time.Now().After(deadline) {
			t.Fatalf("main never ran; init attempt 2: %q", r.file(pod, layout.ExitFile("init", 2)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := r.file(pod, layout.ExitFile("init", 2)); got != "0\n" {
		t.Errorf("init's third attempt: %q, want 0", got)
	}
	// Always: the main container is restarted although it succeeded; a
	// SIGTERM (a delete) stops the restarts and ends the job.
	for strings.HasPrefix(r.file(pod, layout.StartFile("main", 1)), "<") {
		if time.Now().After(deadline) {
			t.Fatal("restartPolicy Always did not restart a container that exited 0")
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute): // generous: only a hang fails
		t.Fatal("the job did not end after SIGTERM")
	}
	time.Sleep(3 * time.Second) // longer than any back-off: nothing may start now
	if _, err := os.Stat(PodRef(pod).Path(r.cfg.SharedRoot, layout.StartFile("main", 3))); err == nil {
		t.Error("an attempt started after SIGTERM")
	}
}

// TestTerminationMessageFromTheLog: with FallbackToLogsOnError, a
// container that fails leaves its log's tail (the last 80 lines, at most
// 2,048 bytes, byte for byte) as its termination message, in its exit
// marker; one that succeeds leaves none. The provider reports it as the
// container's terminated message (and no Slurm text where the container
// said nothing).
func TestTerminationMessageFromTheLog(t *testing.T) {
	r := newRestartRig(t)
	long := strings.Repeat("x", 3000)
	for _, tt := range []struct {
		name, script string
		code         int
		want         string
	}{
		{"fails", `printf 'first\nDONE'; exit 3`, 3, "first\nDONE"},
		{"fails after many lines", `seq 1 100; printf 'last\n'; exit 1`, 1, func() string {
			var b strings.Builder
			for i := 22; i <= 100; i++ {
				b.WriteString(strconv.Itoa(i) + "\n")
			}
			return b.String() + "last\n"
		}()},
		{"fails with a long line", `printf '%s' ` + long + `; exit 2`, 2, long[len(long)-2048:]},
		{"succeeds", `echo DONE`, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := sh("main", tt.script)
			c.TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
			pod := basePod("msg-"+strings.ReplaceAll(tt.name, " ", "-"), c)
			cmd := r.start(t, pod)
			cmd.Wait()
			marker := r.file(pod, "main", layout.AttemptName("0", layout.KindExit))
			code, rest, _ := strings.Cut(marker, "\n")
			msg := ""
			if reason, m, ok := strings.Cut(rest, "\n"); ok && reason == "" {
				msg = m
			}
			if code != strconv.Itoa(tt.code) || msg != tt.want {
				t.Errorf("marker %q: code %s, message %q; want %d, %q", marker, code, msg, tt.code, tt.want)
			}
		})
	}
}

// TestScriptSidecar: a sidecar (an init container with restartPolicy
// Always) has started before the init container and containers after it,
// runs beside them, is restarted whatever its exit, and is stopped once
// the containers end: the job's code is theirs.
func TestScriptSidecar(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	t.Run("started first, stopped last", func(t *testing.T) {
		r := newRestartRig(t)
		// What the sidecar does once started is its own: the others
		// wait a little for its file (svk_started's own test below says
		// they waited for its start).
		read := `for i in $(seq 50); do [ -e "$COUNT.side" ] && break; sleep 0.1; done; cat "$COUNT.side"`
		side := corev1.Container{Name: "side", RestartPolicy: &always, Command: []string{"sh", "-c", `echo up >"$COUNT.side"; exec sleep 1000`}}
		pod := basePod("sidecar", corev1.Container{Name: "main", Command: []string{"sh", "-c", read}})
		pod.Spec.InitContainers = []corev1.Container{side, {Name: "init", Command: []string{"sh", "-c", read}}}
		if err := r.start(t, pod).Wait(); err != nil {
			t.Fatalf("job: %v, want success (the main container's)", err)
		}
		for _, c := range []string{"init", "main"} {
			if got := r.file(pod, layout.LogFile(c, 0)); got != "up\n" {
				t.Errorf("%s's log %q: the sidecar was not running beside it", c, got)
			}
		}
		st := func(c string) time.Time {
			fi, err := os.Stat(PodRef(pod).Path(r.cfg.SharedRoot, layout.StartFile(c, 0)))
			if err != nil {
				t.Fatal(err)
			}
			return fi.ModTime()
		}
		if side, init := st("side"), st("init"); init.Before(side) {
			t.Errorf("the init container started at %v, before the sidecar (%v)", init, side)
		}
		if got := r.file(pod, layout.ExitFile("side", 0)); got == "" || got[0] == '<' {
			t.Errorf("the sidecar's exit marker: %q, want it stopped with one", got)
		}
	})
	t.Run("restarted whatever its exit", func(t *testing.T) {
		r := newRestartRig(t)
		side := corev1.Container{Name: "side", RestartPolicy: &always, Command: []string{"sh", "-c", `echo x >>"$COUNT"; exit 0`}}
		pod := basePod("sidecar-crash", corev1.Container{Name: "main", Command: []string{"sh", "-c", `sleep 2.5; exit 3`}})
		pod.Spec.InitContainers = []corev1.Container{side}
		if code := exitCode(r.start(t, pod).Wait()); code != 3 {
			t.Errorf("job exit %d, want 3: the main container's code", code)
		}
		if b, _ := os.ReadFile(filepath.Join(r.dir, "sidecar-crash.count")); strings.Count(string(b), "x") < 2 {
			t.Errorf("the sidecar ran %d times in 2.5 s with a 1 s back-off, want it restarted", strings.Count(string(b), "x"))
		}
	})
}

// TestSvkStarted: the script waits for a sidecar's start marker (or its
// startup probe's file), and gives up with its code when its run ends.
func TestSvkStarted(t *testing.T) {
	dir := t.TempDir()
	script := "svk_pod_dir=" + shq(dir) + "\n" + runFunction + `
mkdir -p "$svk_pod_dir/side"
began=$SECONDS
( sleep 1.5; : >"$svk_pod_dir/side/0.started"; sleep 5 ) >/dev/null 2>&1 &
svk_started side $! started || exit 9
echo "started after $((SECONDS - began))"
( exit 7 ) &
svk_started other $! start
echo "gave up: $?"
`
	out, err := exec.Command("bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	// $SECONDS counts whole seconds: 1.5 s is 1 or 2.
	if got := string(out); got != "started after 1\ngave up: 7\n" && got != "started after 2\ngave up: 7\n" {
		t.Errorf("output %q: want it to wait for the file (1.5 s), then give up with the run's code 7", got)
	}
}
