// Command slurm-vk-agent runs inside a pod's Slurm job, started by the job
// script, and connects out to the fetch endpoint so that kubectl exec
// reaches the pod's containers: no SSH, no listening port on the compute
// node. It serves one pod, proven by the pod's agent token, and ends with
// the job.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/slurmkube/slurm-vk/tunnel"
	"github.com/slurmkube/slurm-vk/tunnel/agent"
)

func main() {
	var cfg agent.Config
	flag.StringVar(&cfg.URL, "url", "", "the fetch endpoint as this node reaches it (required)")
	flag.StringVar(&cfg.CAFile, "ca-file", "", "CA of an https fetch endpoint")
	flag.StringVar(&cfg.Namespace, "namespace", "", "the pod's namespace (required)")
	flag.StringVar(&cfg.Name, "name", "", "the pod's name (required)")
	flag.StringVar(&cfg.UID, "uid", "", "the pod's UID (required)")
	flag.StringVar(&cfg.TokenFile, "token-file", "", "the pod's agent token (required)")
	flag.StringVar(&cfg.Containers.PIDDir, "pids", "", "directory of the running containers' PID files (required)")
	flag.StringVar(&cfg.Containers.StdinDir, "stdin", "", "directory of the stdin FIFOs of containers started with stdin (kubectl attach)")
	flag.StringVar(&cfg.Containers.Runtime, "runtime", "none", "the job's container runtime")
	flag.IntVar(&cfg.MaxSessions, "max-sessions", 16, "sessions served at once")
	probes := flag.String("probes", "", "the pod's probes and lifecycle hooks (JSON, package tunnel's Probes), run beside its containers")
	podDir := flag.String("pod-dir", "", "the pod directory (with -probes: the containers' attempts)")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if cfg.URL == "" || cfg.Namespace == "" || cfg.Name == "" || cfg.UID == "" || cfg.TokenFile == "" || cfg.Containers.PIDDir == "" {
		fmt.Fprintln(os.Stderr, "slurm-vk-agent: -url, -namespace, -name, -uid, -token-file and -pids are required")
		flag.Usage()
		os.Exit(2)
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("agent", cfg.Namespace+"/"+cfg.Name)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *probes != "" {
		var spec tunnel.Probes
		data, err := os.ReadFile(*probes)
		if err == nil {
			err = json.Unmarshal(data, &spec)
		}
		if err != nil || *podDir == "" {
			cfg.Logger.Error("the pod's probes cannot run", "err", err, "pod-dir", *podDir)
			os.Exit(2)
		}
		// Probes do not wait for the fetch endpoint: they run while
		// the tunnel reconnects.
		go agent.RunProbes(ctx, agent.ProbeConfig{Probes: spec, PodDir: *podDir, Containers: cfg.Containers, Logger: cfg.Logger})
	}
	if err := agent.Run(ctx, cfg); err != nil {
		cfg.Logger.Error("slurm-vk-agent stopped", "err", err)
		os.Exit(1)
	}
}
