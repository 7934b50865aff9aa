// Command slurm-fetchd is the fetch endpoint: it runs on a host that mounts
// the Slurm cluster's shared file system and serves job output and file
// staging to the slurm-vk provider over HTTP(S). See fetch/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/server"
)

func main() {
	var (
		addr      = flag.String("listen", "127.0.0.1:8090", "address to listen on")
		root      = flag.String("root", "", "shared directory holding the pod directories (required)")
		tokenFile = flag.String("token-file", "", "file holding the bearer token clients must send (required)")
		cert      = flag.String("tls-cert", "", "TLS certificate file (with -tls-key: serve HTTPS)")
		key       = flag.String("tls-key", "", "TLS private key file")
		poll      = flag.Duration("poll-interval", time.Second, "long-poll re-check interval when inotify sees nothing (lower it on NFS/Lustre)")
		maxWait   = flag.Duration("max-wait", 60*time.Second, "longest long-poll wait a client may ask for")
		maxUpload = flag.Int64("max-upload", 16<<20, "largest staged file, bytes")
		retention = flag.Duration("retention", 0, "keep a deleted pod's directory this long (0: remove at once)")
		uid       = flag.Int("uid", -1, "owner uid for created files (when running as root for the job user)")
		gid       = flag.Int("gid", -1, "owner gid for created files")
		verbose   = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *root == "" || *tokenFile == "" {
		fmt.Fprintln(os.Stderr, "slurm-fetchd: -root and -token-file are required")
		flag.Usage()
		os.Exit(2)
	}
	if (*cert == "") != (*key == "") {
		fmt.Fprintln(os.Stderr, "slurm-fetchd: -tls-cert and -tls-key go together")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var owner *server.Owner
	if *uid >= 0 || *gid >= 0 {
		owner = &server.Owner{UID: *uid, GID: *gid}
	}
	s, err := server.New(server.Config{
		Root: *root, TokenFile: *tokenFile, PollInterval: *poll, MaxWait: *maxWait,
		MaxUpload: *maxUpload, Retention: *retention, Owner: owner, Logger: log,
	})
	if err != nil {
		log.Error("cannot start", "err", err)
		os.Exit(1)
	}
	defer s.Close()
	err = s.Serve(ctx, server.ServeOptions{
		Addr: *addr, CertFile: *cert, KeyFile: *key,
		Ready: func(a net.Addr) { log.Info("listening", "addr", a.String(), "root", *root, "tls", *cert != "") },
	})
	if err != nil {
		log.Error("serve", "err", err)
		os.Exit(1)
	}
}
