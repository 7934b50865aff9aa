package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

const faultNode = "slurm-e2e-faults"

// faultPod is one pod of a fault scenario and what must become of it.
type faultPod struct {
	name    string
	exit    int  // the exit code its job ends with
	deleted bool // deleted during the scenario
	uid     string
}

func (f faultPod) script() string {
	return fmt.Sprintf("echo start-%[1]s; sleep %[2]d; echo end-%[1]s; exit %[3]d", f.name, 1+len(f.name)%3, f.exit)
}

// faultRig is a fault node whose provider the test kills and restarts.
type faultRig struct {
	c    *cluster
	args []string
	mu   sync.Mutex
	p    *proc
}

func (r *faultRig) start() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p = start(r.c.top, r.c.bin, "slurm-vk", r.args...)
}

// kill stops the provider with SIGKILL: nothing of it gets to clean up.
func (r *faultRig) kill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.kill()
}

// restartLab restarts lab daemons (by their recorded PIDs) and waits until
// the cluster answers again.
func (r *faultRig) restartLab(t *testing.T, daemons ...string) {
	cmd := exec.Command("../../hack/lab/lab-restart.sh", daemons...)
	cmd.Env = append(os.Environ(), "LAB_SUITE="+r.c.lab.Suite)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("restart %v: %v\n%s", daemons, err, out)
	}
}

// TestE2EFaults: 100 pods in flight while the provider is killed with
// SIGKILL and restarted four times (the first while it creates them), slurmctld and slurmrestd are
// restarted, and a tenth of the pods are deleted (some while pending,
// some running, some while the provider is down). At the end the same
// invariants as every fault scenario: each pod in its final phase with its
// exit code and its whole output in kubectl logs, one Slurm job per pod
// (counted through slurmrestd, every call's status checked), and no job
// left running for a deleted pod.
func TestE2EFaults(t *testing.T) {
	c := setupSlurmSide(t)
	c.clearNode(faultNode)
	lab := c.lab
	r := &faultRig{c: c, args: []string{"-kubeconfig", c.cp["CONTROLPLANE_PROVIDER_KUBECONFIG"], "-node-name", faultNode,
		"-partition", lab.Partition, "-slurmrestd-url", lab.URL, "-slurm-token-file", lab.TokenFile, "-slurm-user", lab.User,
		"-fetch-url", "http://" + c.fetchdAddr, "-fetch-token-file", c.tokenFile, "-shared-root", c.root, "-runtime", "none",
		"-max-pods", "500", "-queue-factor", "100",
		"-listen", "127.0.0.1:10250", "-node-ip", "127.0.0.1", "-tls-cert", c.cp["CONTROLPLANE_KUBELET_CERT"],
		"-tls-key", c.cp["CONTROLPLANE_KUBELET_KEY"], "-client-ca", c.cp["CONTROLPLANE_CA"], "-status-interval", "1s"}}
	r.start()
	c.waitReady(faultNode)
	admin, err := slurmclient.New(slurmclient.Config{URL: lab.URL, TokenFile: lab.AdminTokenFile})
	if err != nil {
		t.Fatal(err)
	}

	run := time.Now().UnixNano() % 100000
	var pods []*faultPod
	var manifest strings.Builder
	for i := range 100 {
		p := &faultPod{name: fmt.Sprintf("fault-%d-%d", run, i), deleted: i%10 == 5}
		if i%4 == 0 {
			p.exit = 3
		}
		pods = append(pods, p)
		manifest.WriteString(strings.Replace(podOn(faultNode, p.name, p.script()), "terminationGracePeriodSeconds: 2", "terminationGracePeriodSeconds: 1", 1) + "---\n")
	}
	t.Cleanup(func() {
		for _, p := range pods {
			c.kubectl("delete", "pod", p.name, "--wait=false", "--ignore-not-found")
		}
	})
	del := func(from, to int) {
		for _, p := range pods[from:to] {
			if p.deleted {
				c.kubectl("delete", "pod", p.name, "--wait=false")
			}
		}
	}
	c.apply(manifest.String())
	// Killed while it creates them: as soon as it has reported a pod.
	reported := func() int {
		out, _ := c.kubectl("get", "pods", "--field-selector", "spec.nodeName="+faultNode, "-o", "jsonpath={.items[*].status.startTime}")
		return len(strings.Fields(out))
	}
	c.waitFor("the provider to create pods", 2*time.Minute, func() bool { return reported() > 0 })
	r.kill()
	midCreate := reported()
	r.start()
	for _, p := range pods {
		p.uid = c.must("get", "pod", p.name, "-o", "jsonpath={.metadata.uid}")
	}
	del(0, 30) // while pending
	time.Sleep(4 * time.Second)
	r.kill()
	del(30, 60) // while the provider is down
	time.Sleep(2 * time.Second)
	r.start()
	time.Sleep(5 * time.Second)
	r.restartLab(t, "slurmctld")
	r.kill()
	r.start()
	time.Sleep(3 * time.Second)
	r.restartLab(t, "slurmrestd")
	del(60, 100) // running or about to
	time.Sleep(2 * time.Second)
	r.kill()
	time.Sleep(1 * time.Second)
	r.start()
	c.endScenario(t, admin, pods, time.Now(), 8*time.Minute,
		fmt.Sprintf("provider SIGKILL x4 (first with %d of %d pods created), slurmctld and slurmrestd restarts, 10 deletes", midCreate, len(pods)))

	t.Run("slurm-fetchd down while pods are created, slurmrestd hung", func(t *testing.T) {
		c.t = t
		// Three pods print a line a second while everything below happens;
		// kubectl logs -f follows each from before the fetch endpoint goes.
		followers := c.faultPods(run, "follow", 3)
		const lines = 45
		var want []string
		for i := 1; i <= lines; i++ {
			want = append(want, fmt.Sprintf("line %d", i))
		}
		var fm strings.Builder
		for _, p := range followers {
			fm.WriteString(podOn(faultNode, p.name, fmt.Sprintf(`for i in $(seq 1 %d); do echo "line $i"; sleep 1; done`, lines)) + "---\n")
		}
		c.apply(fm.String())
		followed := make(chan string, len(followers))
		for _, p := range followers {
			c.waitFor(p.name+" to run", 2*time.Minute, func() bool { return c.phase(p.name) == "Running" })
			go func() {
				out, err := c.kubectl("logs", "-f", p.name)
				followed <- fmt.Sprintf("%s %v\n%s", p.name, err, out)
			}()
		}
		time.Sleep(2 * time.Second)
		c.fetchd.kill()
		more := c.faultPods(run, "fetchless", 10)
		c.apply(manifestOf(more))
		for _, p := range more {
			p.uid = c.must("get", "pod", p.name, "-o", "jsonpath={.metadata.uid}")
		}
		// They wait, and say why.
		c.waitFor("the pods to wait for the fetch endpoint", 3*time.Minute, func() bool {
			for _, p := range more {
				if r, _ := c.kubectl("get", "pod", p.name, "-o", "jsonpath={.status.reason}"); r != "FetchEndpointUnavailable" {
					return false
				}
			}
			return true
		})
		// slurmrestd stops answering (SIGSTOP) for 20 s while the fetch
		// endpoint comes back: every request in flight hangs until then.
		pid, err := os.ReadFile(filepath.Join(filepath.Dir(lab.TokenFile), "slurmrestd.pid"))
		if err != nil {
			t.Fatal(err)
		}
		rest, err := os.FindProcess(atoi(t, strings.TrimSpace(string(pid))))
		if err != nil {
			t.Fatal(err)
		}
		// Whatever happens from here, slurmrestd runs again when the test
		// ends: a stopped slurmrestd would fail every later test.
		t.Cleanup(func() { rest.Signal(syscall.SIGCONT) })
		rest.Signal(syscall.SIGSTOP)
		c.startFetchd(c.top)
		time.Sleep(20 * time.Second)
		rest.Signal(syscall.SIGCONT)
		c.endScenario(t, admin, more, time.Now(), 5*time.Minute, "slurm-fetchd down during creates and 3 logs -f, then slurmrestd stopped 20 s")
		for range followers {
			select {
			case got := <-followed:
				name, out, _ := strings.Cut(got, "\n")
				if out != strings.Join(want, "\n") {
					t.Errorf("logs -f of %s through the storm: %q", name, got)
				}
			case <-time.After(3 * time.Minute):
				t.Fatal("a logs -f did not end after its container")
			}
		}
	})

	t.Run("slurmrestd behind a proxy that loses answers, then answers 503", func(t *testing.T) {
		c.t = t
		proxy := newFaultProxy(t, lab.URL)
		// The provider now reaches slurmrestd through the proxy only.
		r.kill()
		args := append([]string(nil), r.args...)
		for i := range args {
			if args[i] == "-slurmrestd-url" {
				args[i+1] = proxy.url
			}
		}
		r.args = args
		r.start()
		c.waitReady(faultNode)
		more := c.faultPods(run, "lost", 10)
		// Every request reaches slurmrestd, which does it, but its answer
		// is lost: the proxy says 502. A submit's outcome is unknown, so a
		// second submit would run the pod twice.
		proxy.mode.Store(proxyLoseAnswers)
		c.apply(manifestOf(more))
		for _, p := range more {
			p.uid = c.must("get", "pod", p.name, "-o", "jsonpath={.metadata.uid}")
		}
		c.waitFor("submits whose answers were lost", 2*time.Minute, func() bool { return proxy.lostSubmits.Load() >= int32(len(more)) })
		time.Sleep(5 * time.Second)
		// Then slurmrestd is "down" behind the proxy: 503, nothing reaches it.
		proxy.mode.Store(proxyUnavailable)
		time.Sleep(10 * time.Second)
		proxy.mode.Store(proxyPass)
		c.endScenario(t, admin, more, time.Now(), 5*time.Minute,
			fmt.Sprintf("slurmrestd answers lost (502, %d submits) then 503 for 10 s", proxy.lostSubmits.Load()))
	})
}

// faultPods are n pods that end with 0, named for the scenario.
func (c *cluster) faultPods(run int64, scenario string, n int) []*faultPod {
	var pods []*faultPod
	for i := range n {
		pods = append(pods, &faultPod{name: fmt.Sprintf("%s-%d-%d", scenario, run, i)})
	}
	c.t.Cleanup(func() {
		for _, p := range pods {
			c.kubectl("delete", "pod", p.name, "--wait=false", "--ignore-not-found")
		}
	})
	return pods
}

func manifestOf(pods []*faultPod) string {
	var m strings.Builder
	for _, p := range pods {
		m.WriteString(podOn(faultNode, p.name, p.script()) + "---\n")
	}
	return m.String()
}

// endScenario waits (up to d) for every pod not deleted to end, checks the
// invariants every fault scenario shares, and logs the scenario's row of
// the table in issue #13's note.
func (c *cluster) endScenario(t *testing.T, admin *slurmclient.Client, pods []*faultPod, lastFault time.Time, d time.Duration, label string) {
	t.Helper()
	c.waitFor("every pod to end", d, func() bool {
		for _, p := range pods {
			if ph := c.phaseOrGone(p.name); !p.deleted && ph != "Succeeded" && ph != "Failed" {
				return false
			}
		}
		return true
	})
	recovered := time.Since(lastFault)
	dups, orphans := c.checkFaultInvariants(t, admin, pods)
	t.Logf("| %s | %d pods | %d duplicates | %d orphans | all ended %s after the last fault |",
		label, len(pods), dups, orphans, recovered.Round(time.Second))
}

// Fault proxy modes.
const (
	proxyPass        int32 = iota // forward, answer what slurmrestd says
	proxyLoseAnswers              // forward, but answer 502: the request was done
	proxyUnavailable              // answer 503 without forwarding
)

// faultProxy stands between the provider and slurmrestd, on loopback, as
// a gateway or load balancer would, and fails the way one does.
type faultProxy struct {
	url         string
	mode        atomic.Int32
	lostSubmits atomic.Int32
}

func newFaultProxy(t *testing.T, upstream string) *faultProxy {
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p.mode.Load() {
		case proxyUnavailable:
			http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
		case proxyLoseAnswers:
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/job/submit") && rec.Code == http.StatusOK {
				p.lostSubmits.Add(1)
			}
			http.Error(w, "bad gateway", http.StatusBadGateway)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

func atoi(t *testing.T, s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// phaseOrGone is the pod's phase, or "" if it is gone.
func (c *cluster) phaseOrGone(name string) string {
	out, _ := c.kubectl("get", "pod", name, "--ignore-not-found", "-o", "jsonpath={.status.phase}")
	return out
}

// checkFaultInvariants checks what must hold after any fault: every pod
// not deleted ended in the phase and with the exit code its script asked
// for, its whole output reaches kubectl logs, and it had exactly one job;
// no pod had two, and no deleted pod's job still runs (given a minute for
// the grace periods). It returns the duplicates and orphans found.
func (c *cluster) checkFaultInvariants(t *testing.T, admin *slurmclient.Client, pods []*faultPod) (dups, orphans int) {
	t.Helper()
	jobs := map[string][]slurmclient.Job{} // pod UID -> its jobs
	list := func() {
		t.Helper()
		all, err := admin.Jobs(context.Background(), slurmclient.JobFilter{})
		if err != nil {
			t.Fatalf("list Slurm's jobs: %v", err)
		}
		clear(jobs)
		for _, j := range all {
			if i := strings.LastIndexByte(j.Comment, ':'); strings.HasPrefix(j.Comment, "slurm-vk:"+faultNode+":") && i > 0 {
				jobs[j.Comment[i+1:]] = append(jobs[j.Comment[i+1:]], j)
			}
		}
	}
	list()
	for _, p := range pods {
		if n := len(jobs[p.uid]); n > 1 {
			dups += n - 1
			t.Errorf("pod %s ran %d times: jobs %v", p.name, n, jobIDs(jobs[p.uid]))
		}
		if p.deleted {
			continue
		}
		want := map[int]string{0: "Succeeded", 3: "Failed"}[p.exit]
		if ph := c.phaseOrGone(p.name); ph != want {
			t.Errorf("pod %s: %s, want %s", p.name, ph, want)
			continue
		}
		if code := c.must("get", "pod", p.name, "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"); code != fmt.Sprint(p.exit) {
			t.Errorf("pod %s: exit code %s, want %d", p.name, code, p.exit)
		}
		if len(jobs[p.uid]) != 1 {
			t.Errorf("pod %s: %d Slurm jobs, want 1", p.name, len(jobs[p.uid]))
		}
		if out, err := c.kubectl("logs", p.name); err != nil || out != "start-"+p.name+"\nend-"+p.name {
			t.Errorf("kubectl logs %s: %q, %v", p.name, out, err)
		}
	}
	running := func() []string {
		var left []string
		for _, p := range pods {
			for _, j := range jobs[p.uid] {
				if p.deleted && !j.State.Terminal() {
					left = append(left, fmt.Sprintf("%s: job %d %s", p.name, j.ID, j.State))
				}
			}
		}
		return left
	}
	deadline := time.Now().Add(time.Minute)
	for len(running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		list()
	}
	if left := running(); len(left) > 0 {
		orphans = len(left)
		t.Errorf("jobs of deleted pods still running a minute on: %v", left)
	}
	return dups, orphans
}

func jobIDs(js []slurmclient.Job) []slurmclient.JobID {
	var ids []slurmclient.JobID
	for _, j := range js {
		ids = append(ids, j.ID)
	}
	return ids
}
