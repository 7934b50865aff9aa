package logtime

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkJobWrite1GiB: what the time index costs a job. A writer (dd,
// 64 KiB writes) puts 1 GiB into a log as fast as it can, alone and with
// the real slurm-vk-logtime sampling beside it, alternately; the rate is
// the writer's. bench/fetch.sh runs it.
func BenchmarkJobWrite1GiB(b *testing.B) {
	dir := b.TempDir()
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
	var alone, sampled time.Duration
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			alone += write(false)
			sampled += write(true)
		} else {
			sampled += write(true)
			alone += write(false)
		}
	}
	mb := 1024 * float64(b.N)
	b.ReportMetric(mb/alone.Seconds(), "alone-MiB/s")
	b.ReportMetric(mb/sampled.Seconds(), "sampled-MiB/s")
	b.ReportMetric(alone.Seconds()/sampled.Seconds(), "sampled/alone")
	b.ReportMetric(float64(records), "records")
}
