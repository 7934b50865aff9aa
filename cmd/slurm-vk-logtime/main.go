// Command slurm-vk-logtime records when a container's output was written:
// the job script starts it beside each container attempt, and it appends a
// time index (fetch/logtime) next to the log until the script stops it or
// goes away. Install it on the compute nodes (in PATH, or where the node's
// logTimeHelper setting says); without it, logs still work and
// --timestamps/--since fall back to the log's modification time.
//
//	slurm-vk-logtime LOG INDEX
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/logtime"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: slurm-vk-logtime LOG INDEX")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	parent := os.Getppid()
	s := &logtime.Sampler{Log: os.Args[1], Index: os.Args[2], Every: 10 * time.Millisecond,
		Alive: func() bool { return os.Getppid() == parent }}
	if err := s.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "slurm-vk-logtime:", err)
		os.Exit(1)
	}
}
