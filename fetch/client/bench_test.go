package client

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

// Benchmarks run against the real slurm-fetchd binary on real files, with
// the baseline in the same run; bench/fetch.sh runs them and prints the
// figures.

// BenchmarkRead1GiB: a finished 1 GiB output read through the client, and
// the same file read by cat, alternately.
func BenchmarkRead1GiB(b *testing.B) {
	f := newFixture(b)
	const size = 1 << 30
	writeRandom(b, f.logPath("main"), size, 3)
	f.exit(b, "main", 0)
	d := startFetchd(b, f)
	c := newClient(b, "http://"+d.addr)
	client := func() {
		rc, err := c.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != size {
			b.Fatalf("client read %d bytes: %v", n, err)
		}
	}
	cat := func() {
		cmd := exec.Command("cat", f.logPath("main"))
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, out)
		if err := cmd.Wait(); err != nil || n != size {
			b.Fatalf("cat read %d bytes: %v", n, err)
		}
	}
	var ct, rt time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if i%2 == 0 {
			client()
			t1 := time.Now()
			cat()
			ct, rt = ct+t1.Sub(t0), rt+time.Since(t1)
		} else {
			cat()
			t1 := time.Now()
			client()
			rt, ct = rt+t1.Sub(t0), ct+time.Since(t1)
		}
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/ct.Seconds(), "client-MiB/s")
	b.ReportMetric(mb/rt.Seconds(), "cat-MiB/s")
	b.ReportMetric(rt.Seconds()/ct.Seconds(), "client/cat")
}

// BenchmarkReadTimestamps1GiB: a finished 1 GiB output of 80-byte lines,
// timed by an index with a record per 64 KiB (more than the sampler writes
// for a fast writer), read through the client with and without
// --timestamps, alternately. Rates count the log's own bytes.
func BenchmarkReadTimestamps1GiB(b *testing.B) {
	f := newFixture(b)
	const size = 1 << 30
	line := strings.Repeat("x", 79) + "\n"
	w, err := os.Create(f.logPath("main"))
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var idx []byte
	base := time.Now().Add(-time.Hour).UnixNano()
	for n := 0; n < size; n += len(line) {
		bw.WriteString(line[:min(len(line), size-n)])
		if end := n + len(line); end%(64<<10) < len(line) || end >= size {
			idx = append(idx, logtime.Record{End: int64(min(end, size)), Time: base + int64(end)}.Encode()...)
		}
	}
	bw.Flush()
	w.Close()
	if err := os.WriteFile(filepath.Join(f.root, pod.Dir(), layout.TimesFile("main", 0)), idx, 0o644); err != nil {
		b.Fatal(err)
	}
	f.exit(b, "main", 0)
	d := startFetchd(b, f)
	c := newClient(b, "http://"+d.addr)
	read := func(ts bool) time.Duration {
		t0 := time.Now()
		rc, err := c.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1, Timestamps: ts})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if want := int64(size + size/80*31 + 31); err != nil || (!ts && n != size) || (ts && n < want-31) {
			b.Fatalf("timestamps=%v: read %d bytes: %v", ts, n, err)
		}
		return time.Since(t0)
	}
	var plain, stamped time.Duration
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			plain += read(false)
			stamped += read(true)
		} else {
			stamped += read(true)
			plain += read(false)
		}
	}
	mb := float64(size) / (1 << 20) * float64(b.N)
	b.ReportMetric(mb/plain.Seconds(), "plain-MiB/s")
	b.ReportMetric(mb/stamped.Seconds(), "timestamps-MiB/s")
	b.ReportMetric(plain.Seconds()/stamped.Seconds(), "timestamps/plain")
}

// BenchmarkFollowLatency: a writer appends a timestamped line every 10 ms
// for FOLLOW_SECONDS (default 60); a follow stream measures write→receive,
// without and with --timestamps (the time index then written by the real
// sampler beside the writer).
func BenchmarkFollowLatency(b *testing.B) {
	for _, ts := range []bool{false, true} {
		b.Run(fmt.Sprintf("timestamps=%v", ts), func(b *testing.B) { followLatency(b, ts) })
	}
}

func followLatency(b *testing.B, ts bool) {
	seconds := 60
	if v, err := strconv.Atoi(os.Getenv("FOLLOW_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	for i := 0; i < b.N; i++ {
		f := newFixture(b)
		d := startFetchd(b, f)
		c := newClient(b, "http://"+d.addr, func(c *Config) { c.Wait = 30 * time.Second })
		if err := os.WriteFile(f.logPath("main"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
		rc, err := c.Logs(context.Background(), pod, "main", LogOptions{TailLines: -1, Follow: true, Timestamps: ts})
		if err != nil {
			b.Fatal(err)
		}
		ctx, stopSampler := context.WithCancel(context.Background())
		defer stopSampler()
		if ts {
			s := &logtime.Sampler{Log: f.logPath("main"), Index: filepath.Join(f.root, pod.Dir(), layout.TimesFile("main", 0)), Every: 10 * time.Millisecond}
			go s.Run(ctx)
		}
		go func() {
			w, _ := os.OpenFile(f.logPath("main"), os.O_WRONLY|os.O_APPEND, 0)
			tick := time.NewTicker(10 * time.Millisecond)
			end := time.Now().Add(time.Duration(seconds) * time.Second)
			for now := range tick.C {
				if now.After(end) {
					break
				}
				fmt.Fprintf(w, "%d\n", time.Now().UnixNano())
			}
			tick.Stop()
			w.Close()
			f.exit(b, "main", 0)
		}()
		var lat []time.Duration
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			text := sc.Text()
			if ts {
				_, text, _ = strings.Cut(text, " ")
			}
			ns, err := strconv.ParseInt(text, 10, 64)
			if err != nil {
				b.Fatalf("line %q", sc.Text())
			}
			lat = append(lat, time.Since(time.Unix(0, ns)))
		}
		rc.Close()
		if sc.Err() != nil || len(lat) < seconds*90 {
			b.Fatalf("%d lines, %v", len(lat), sc.Err())
		}
		slices.Sort(lat)
		pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
		b.ReportMetric(pct(0.5), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(pct(1), "max-ms")
		b.ReportMetric(float64(len(lat)), "lines")
	}
}

// BenchmarkIdleFollows1000: 1,000 follow streams on outputs that do not
// change, as 1,000 idle `kubectl logs -f`. Reports the endpoint's and the
// client's memory and CPU over IDLE_SECONDS (default 20).
func BenchmarkIdleFollows1000(b *testing.B) {
	const streams = 1000
	seconds := 20
	if v, err := strconv.Atoi(os.Getenv("IDLE_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	for i := 0; i < b.N; i++ {
		f := newFixture(b)
		pods := make([]layout.Pod, streams)
		for j := range pods {
			pods[j] = layout.Pod{Namespace: "ns", Name: fmt.Sprintf("idle-%d", j), UID: "u"}
			dir := filepath.Join(f.root, pods[j].Dir(), "main")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "0.log"), []byte("started\n"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		d := startFetchd(b, f)
		c := newClient(b, "http://"+d.addr, func(c *Config) { c.Wait = 30 * time.Second })
		runtime.GC()
		rssBefore := rss(b, "self")
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		var opened sync.WaitGroup
		opened.Add(streams)
		for _, p := range pods {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rc, err := c.Logs(ctx, p, "main", LogOptions{TailLines: -1, Follow: true})
				opened.Done()
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, rc)
				rc.Close()
			}()
		}
		opened.Wait()
		time.Sleep(3 * time.Second) // every stream reaches its long-poll
		srvCPU0, selfCPU0 := cpu(b, d.pid()), selfCPU()
		time.Sleep(time.Duration(seconds) * time.Second)
		srvCPU, selfCPUUsed := cpu(b, d.pid())-srvCPU0, selfCPU()-selfCPU0
		srvRSS, clientRSS := rss(b, strconv.Itoa(d.pid())), rss(b, "self")-rssBefore
		window := float64(seconds)
		b.ReportMetric(float64(srvRSS)/(1<<20), "endpoint-MiB")
		b.ReportMetric(float64(clientRSS)/(1<<20), "client-MiB")
		b.ReportMetric(float64(srvRSS+clientRSS)/(1<<20), "total-MiB")
		b.ReportMetric(100*srvCPU.Seconds()/window, "endpoint-%core")
		b.ReportMetric(100*selfCPUUsed.Seconds()/window, "client-%core")
		cancel()
		wg.Wait()
	}
}

// BenchmarkPodDirs20000: what the provider asks of slurm-fetchd for every
// pod it refreshes (Containers: each container's attempts and exit
// markers), on a root of PODS (default 20,000) pod directories against a
// root of 200, alternately, in the same run; and the endpoint's memory
// with each. Pods are picked at random.
func BenchmarkPodDirs20000(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("PODS")); err == nil && v > 0 {
		n = v
	}
	type side struct {
		pods []layout.Pod
		d    *fetchd
		c    *Client
		lat  []time.Duration
	}
	sides := make([]*side, 2)
	for i, size := range []int{200, n} {
		f := newFixture(b)
		pods := fetchtest.MakePodDirs(b, f.root, size, 10)
		d := startFetchd(b, f)
		sides[i] = &side{pods: pods, d: d, c: newClient(b, "http://"+d.addr)}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range sides {
			s := sides[(i+j)%2] // alternate which side goes first
			pod := s.pods[rng.IntN(len(s.pods))]
			t0 := time.Now()
			got, err := s.c.Containers(ctx, pod, []string{"main"})
			s.lat = append(s.lat, time.Since(t0))
			if err != nil || !got["main"].Current.Exited || got["main"].Current.Size == 0 {
				b.Fatalf("containers of %s: %+v, %v", pod, got, err)
			}
		}
	}
	b.StopTimer()
	pct := func(lat []time.Duration, p float64) float64 {
		slices.Sort(lat)
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	small, large := sides[0], sides[1]
	b.ReportMetric(pct(small.lat, 0.5), "p50-ms-200")
	b.ReportMetric(pct(large.lat, 0.5), fmt.Sprintf("p50-ms-%d", n))
	b.ReportMetric(pct(small.lat, 0.99), "p99-ms-200")
	b.ReportMetric(pct(large.lat, 0.99), fmt.Sprintf("p99-ms-%d", n))
	b.ReportMetric(pct(large.lat, 0.5)/pct(small.lat, 0.5), "p50-ratio")
	b.ReportMetric(float64(rss(b, strconv.Itoa(small.d.pid())))/(1<<20), "endpoint-MiB-200")
	b.ReportMetric(float64(rss(b, strconv.Itoa(large.d.pid())))/(1<<20), fmt.Sprintf("endpoint-MiB-%d", n))
}

// startFetchd runs the real binary on the fixture, with its default
// settings, until the benchmark ends.
func startFetchd(b *testing.B, f *fixture) *fetchd {
	d := &fetchd{t: b, f: f, args: []string{}}
	d.start()
	b.Cleanup(d.kill)
	return d
}

func (d *fetchd) pid() int { return d.cmd.Process.Pid }

// rss reads VmRSS of /proc/<pid> in bytes.
func rss(b *testing.B, pid string) int64 {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// cpu reads a process's user+system CPU time from /proc/<pid>/stat.
func cpu(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
