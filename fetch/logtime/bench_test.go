package logtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkJobWrite1GiB: what the time index costs a job. A writer (dd,
// 64 KiB writes) puts 1 GiB into a log as fast as it can, alone and with
// the real slurm-vk-logtime sampling beside it, alternately; the rate is
// the writer's, the ratio that of the medians. The log goes to /dev/shm
// when there is one: writeback to a disk varies more from run to run than
// the sampler could cost. bench/fetch.sh runs it.
func BenchmarkJobWrite1GiB(b *testing.B) {
	dir := b.TempDir()
	if shm, err := os.MkdirTemp("/dev/shm", "logtime-bench-"); err == nil {
		dir = shm
		defer os.RemoveAll(shm)
	}
	helper := filepath.Join(dir, "slurm-vk-logtime")
	if out, err := exec.Command("go", "build", "-o", helper, "github.com/slurmkube/slurm-vk/cmd/slurm-vk-logtime").CombinedOutput(); err != nil {
		b.Fatalf("build: %v: %s", err, out)
	}
	log, idx := filepath.Join(dir, "0.log"), filepath.Join(dir, "0.times")
	var records int64
	write := func(sampled bool) time.Duration {
		os.Remove(log)
		os.Remove(idx)
		var sampler *exec.Cmd
		if sampled {
			sampler = exec.Command(helper, log, idx)
			if err := sampler.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() {
				sampler.Process.Signal(os.Interrupt)
				sampler.Wait()
				fi, err := os.Stat(idx)
				if err != nil || fi.Size() == 0 {
					b.Fatalf("the sampler wrote no index: %v", err)
				}
				records = fi.Size() / RecordSize
			}()
		}
		t0 := time.Now()
		out, err := exec.Command("dd", "if=/dev/zero", "of="+log, "bs=64k", "count=16384", "oflag=append", "conv=notrunc").CombinedOutput()
		if err != nil {
			b.Fatalf("dd: %v: %s", err, out)
		}
		return time.Since(t0)
	}
	var alone, sampled []time.Duration
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			alone = append(alone, write(false))
			sampled = append(sampled, write(true))
		} else {
			sampled = append(sampled, write(true))
			alone = append(alone, write(false))
		}
	}
	median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	ma, ms := median(alone), median(sampled)
	b.ReportMetric(1024/ma.Seconds(), "alone-MiB/s")
	b.ReportMetric(1024/ms.Seconds(), "sampled-MiB/s")
	b.ReportMetric(ma.Seconds()/ms.Seconds(), "sampled/alone")
	b.ReportMetric(float64(records), "records")
}
