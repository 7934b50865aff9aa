package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// stampedLine is a line of kubectl logs --timestamps: the kubelet's
// RFC 3339 time with nine fractional digits, a space, the line.
var stampedLine = regexp.MustCompile(`^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z) (.*)$`)

type stamped struct {
	at   time.Time
	line string
}

func parseStamped(t *testing.T, out string) []stamped {
	t.Helper()
	var lines []stamped
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			continue
		}
		m := stampedLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("not a timestamped line: %q", l)
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, stamped{at, m[2]})
	}
	return lines
}

// TestE2ELogs: kubectl logs --timestamps, --since, --since-time, --tail=0
// and --previous, and containers that restart (restartPolicy OnFailure,
// Always), through the real chain. The back-off is shortened (2 s, as a
// node may configure it) to keep the suite short; its doubling is the
// script's, tested without Slurm.
func TestE2ELogs(t *testing.T) {
	c := setup(t, "-restart-backoff", "2s", "-max-restart-backoff", "1m")

	t.Run("--timestamps, --since, --since-time, --tail=0 on a pod printing a line a second", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "ticker")
		// It ticks until the test has made its --since calls and drops a
		// stop file in its directory (its working directory), so a line
		// is always within the last 3 s of each call, however slow the
		// calls are on 2 busy cores; 300 ticks at most.
		c.apply(pod(name, `i=0; while [ ! -e stop ] && [ $i -lt 300 ]; do i=$((i + 1)); echo "tick $i"; sleep 1; done`))
		c.waitFor("Running and two lines", 2*time.Minute, func() bool {
			out, _ := c.kubectl("logs", name)
			return strings.Count(out, "tick") >= 2
		})

		// Follow with timestamps while it prints: every line stamped.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		follow := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.kubeconfig, "logs", "-f", "--timestamps", name)
		pipe, _ := follow.StdoutPipe()
		if err := follow.Start(); err != nil {
			t.Fatal(err)
		}
		var followed []string
		followDone := make(chan struct{})
		go func() {
			defer close(followDone)
			sc := bufio.NewScanner(pipe)
			for sc.Scan() {
				followed = append(followed, sc.Text())
			}
		}()

		// --since=3s while it runs: exactly the lines stamped within the
		// three seconds before the call (the provider and the compute node
		// share this host's clock).
		before := time.Now()
		since := parseStamped(t, c.must("logs", name, "--timestamps", "--since=3s"))
		after := time.Now()
		all := parseStamped(t, c.must("logs", name, "--timestamps"))
		if len(since) == 0 || len(since) > len(all) {
			t.Fatalf("--since=3s: %d lines of %d", len(since), len(all))
		}
		first := -1 // where since's lines start in all
		for i := range all {
			if all[i].line == since[0].line {
				first = i
				break
			}
		}
		if first < 0 || first+len(since) > len(all) {
			t.Fatalf("--since=3s: %v is not in the log %v", since, all)
		}
		for i, s := range since {
			if all[first+i].line != s.line {
				t.Fatalf("--since=3s is not the log's last lines: %v", since)
			}
			if s.at.Before(before.Add(-3 * time.Second)) {
				t.Errorf("--since=3s returned %q stamped %v, before %v", s.line, s.at, before.Add(-3*time.Second))
			}
		}
		if first > 0 && !all[first-1].at.Before(after.Add(-3*time.Second)) {
			t.Errorf("--since=3s left out %q stamped %v, after %v", all[first-1].line, all[first-1].at, after.Add(-3*time.Second))
		}

		c.waitFor("six lines", 2*time.Minute, func() bool {
			out, _ := c.kubectl("logs", name)
			return strings.Count(out, "tick") >= 6
		})
		c.stopFile(t, name, "main")
		c.waitFor("Succeeded", 2*time.Minute, func() bool { return c.phase(name) == "Succeeded" })
		<-followDone
		if err := follow.Wait(); err != nil {
			t.Fatalf("logs -f --timestamps: %v", err)
		}
		all = parseStamped(t, c.must("logs", name, "--timestamps"))
		if len(all) < len(since) || len(all) >= 300 {
			t.Fatalf("--timestamps: %d lines, want those before the stop file: %v", len(all), all)
		}
		for i, s := range all {
			if s.line != fmt.Sprintf("tick %d", i+1) {
				t.Fatalf("line %d: %q", i, s.line)
			}
			// Written a second apart: the time is each line's, not the
			// time it was read (all read at once here).
			if i > 0 && s.at.Sub(all[i-1].at) < 500*time.Millisecond {
				t.Errorf("lines %d and %d stamped %v apart, want about a second", i, i+1, s.at.Sub(all[i-1].at))
			}
		}
		// Followed lines carry the same times, or a little earlier where a
		// line was read before the sampler recorded it (then the log's
		// mtime: the time of that very write).
		got := parseStamped(t, strings.Join(followed, "\n"))
		if len(got) != len(all) {
			t.Fatalf("logs -f --timestamps: %d lines, want %d", len(got), len(all))
		}
		for i := range got {
			if got[i].line != all[i].line || got[i].at.After(all[i].at) || all[i].at.Sub(got[i].at) > 2*time.Second {
				t.Errorf("logs -f --timestamps line %d: %v, later read as %v", i, got[i], all[i])
			}
		}

		// --since-time (whole seconds, as kubectl sends it): the lines
		// stamped at or after it, no more, no less.
		cut := all[3].at.Truncate(time.Second).Add(time.Second)
		var want []string
		for _, s := range all {
			if !s.at.Before(cut) {
				want = append(want, s.line)
			}
		}
		if got := c.must("logs", name, "--since-time="+cut.Format(time.RFC3339)); got != strings.Join(want, "\n") {
			t.Errorf("--since-time=%s: %q, want %q", cut.Format(time.RFC3339), got, want)
		}
		if got := c.must("logs", name, "--tail=0"); got != "" {
			t.Errorf("--tail=0: %q, want nothing", got)
		}
		if got := c.must("logs", name, "--tail=1", "--timestamps"); !strings.HasSuffix(got, " "+all[len(all)-1].line) || strings.Count(got, "\n") != 0 {
			t.Errorf("--tail=1 --timestamps: %q", got)
		}
		// --previous without a previous container: the kubelet's answer.
		_, err := c.kubectl("logs", name, "--previous")
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("previous terminated container %q in pod %q not found", "main", name)) {
			t.Errorf("--previous without one: %v", err)
		}
	})

	t.Run("a batch/v1 Job with OnFailure: fails twice, restarted in place, completes", func(t *testing.T) {
		c.t = t
		name := c.job(t, "onfailure", "backoffLimit: 4", "OnFailure", `n=$(cat count 2>/dev/null || echo 0); echo $((n + 1)) >count; echo "attempt $n"; [ $n -ge 2 ]`)
		c.waitFor("the Job to complete", 3*time.Minute, func() bool {
			out, _ := c.kubectl("get", "job", name, "-o", "jsonpath={.status.succeeded}")
			return out == "1"
		})
		pods := strings.Fields(c.must("get", "pods", "-l", "job-name="+name, "-o", "jsonpath={.items[*].metadata.name}"))
		if len(pods) != 1 {
			t.Fatalf("pods of the Job: %v, want one (restarted in place)", pods)
		}
		p := pods[0]
		if got := c.must("get", "pod", p, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); got != "2" {
			t.Errorf("restartCount %s, want 2", got)
		}
		if got := c.must("get", "pod", p, "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}"); got != "1" {
			t.Errorf("lastState exit code %q, want 1", got)
		}
		if got := c.must("logs", p); got != "attempt 2" {
			t.Errorf("logs: %q, want the third attempt's", got)
		}
		if got := c.must("logs", p, "--previous"); got != "attempt 1" {
			t.Errorf("logs --previous: %q, want the second attempt's", got)
		}
	})

	t.Run("restartPolicy Always, a container that keeps failing: CrashLoopBackOff", func(t *testing.T) {
		c.t = t
		name := c.unique(t, "crashloop")
		c.apply(strings.Replace(pod(name, `echo "crash"; exit 3`), "restartPolicy: Never", "restartPolicy: Always", 1))
		c.waitFor("CrashLoopBackOff in kubectl get pod, after a restart", 3*time.Minute, func() bool {
			out, _ := c.kubectl("get", "pod", name, "--no-headers")
			restarts, _ := c.kubectl("get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
			return strings.Contains(out, "CrashLoopBackOff") && restarts != "" && restarts != "0"
		})
		if got := c.must("get", "pod", name, "-o", "jsonpath={.status.phase}"); got != "Running" {
			t.Errorf("phase %s, want Running (the job runs on)", got)
		}
		if got := c.must("get", "pod", name, "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}"); got != "3" {
			t.Errorf("lastState exit code %q, want 3", got)
		}
		if got := c.must("logs", name, "--previous"); got != "crash" {
			t.Errorf("logs --previous: %q", got)
		}
		// Deleting it ends the job in Slurm: Always holds the allocation
		// only as long as the pod exists.
		uid := c.must("get", "pod", name, "-o", "jsonpath={.metadata.uid}")
		c.must("delete", "pod", name, "--wait=false")
		c.waitFor("its Slurm job to end", 2*time.Minute, func() bool { return c.slurmJob(uid).State.Terminal() })
	})
}
