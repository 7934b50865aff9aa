package server_test

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/server"
)

// BenchmarkSweep: one janitor sweep over PODS (default 20,000) pod
// directories against 200 in the same run, a tenth of them deleted
// recently (kept by the retention): what the janitor costs every minute.
// bench/fetch.sh runs it.
func BenchmarkSweep(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("PODS")); err == nil && v > 0 {
		n = v
	}
	for _, size := range []int{200, n} {
		b.Run(fmt.Sprintf("pods=%d", size), func(b *testing.B) {
			root := filepath.Join(b.TempDir(), "root")
			fetchtest.MakePodDirs(b, root, size, 10)
			tok := filepath.Join(b.TempDir(), "token")
			if err := os.WriteFile(tok, []byte("bench-token\n"), 0o600); err != nil {
				b.Fatal(err)
			}
			s, err := server.New(server.Config{Root: root, TokenFile: tok, Retention: time.Hour,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s.Sweep(time.Now())
			}
			b.StopTimer()
			left, err := os.ReadDir(root)
			if err != nil || len(left) != size {
				b.Fatalf("the sweep removed directories it had to keep: %d left of %d (%v)", len(left), size, err)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(size), "µs/pod")
		})
	}
}
