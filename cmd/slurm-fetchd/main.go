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
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/server"
)

func main() {
	var (
		addr      = flag.String("listen", "127.0.0.1:8090", "address to listen on")
		root      = flag.String("root", "", "shared directory holding the pod directories (required)")
		tokenFile = flag.String("token-file", "", "file holding a bearer token that reaches every pod (required unless -clients)")
		clients   = flag.String("clients", "", "file of clients that reach only their users' pods, a line each: name token-file user,user...")
		cert      = flag.String("tls-cert", "", "TLS certificate file (with -tls-key: serve HTTPS)")
		key       = flag.String("tls-key", "", "TLS private key file")
		poll      = flag.Duration("poll-interval", time.Second, "long-poll re-check interval when inotify sees nothing (lower it on NFS/Lustre)")
		maxWait   = flag.Duration("max-wait", 60*time.Second, "longest long-poll wait a client may ask for")
		maxUpload = flag.Int64("max-upload", 16<<20, "largest staged file, bytes")
		maxPolls  = flag.Int("max-long-polls", 4096, "log reads that may wait at once (beyond: 503, retry later)")
		podPolls  = flag.Int("max-long-polls-per-pod", 32, "log reads that may wait at once on one pod (beyond: 429)")
		maxAgents = flag.Int("max-agents", 10000, "exec agents (one per running pod with exec) connected at once")
		retention = flag.Duration("retention", 0, "keep a deleted pod's directory this long (0: remove at once)")
		uid       = flag.Int("uid", -1, "owner uid of pod directories whose create names no user (single-user tenancy, when running as root)")
		gid       = flag.Int("gid", -1, "owner gid for those")
		users     = flag.String("users", "", "users pod directories may be created for, comma-separated: name (looked up in the user database) or name=uid:gid")
		verbose   = flag.Bool("v", false, "debug logging")
	)
	flag.Parse()
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if *root == "" || (*tokenFile == "" && *clients == "") {
		fmt.Fprintln(os.Stderr, "slurm-fetchd: -root and -token-file (or -clients) are required")
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
		if *uid <= 0 || *gid <= 0 {
			fmt.Fprintln(os.Stderr, "slurm-fetchd: -uid and -gid go together and name an ordinary user, not root")
			os.Exit(2)
		}
		owner = &server.Owner{UID: *uid, GID: *gid}
	}
	allowed, err := parseUsers(*users)
	if err != nil {
		fmt.Fprintln(os.Stderr, "slurm-fetchd: -users:", err)
		os.Exit(2)
	}
	var cls []server.Client
	if *clients != "" {
		if cls, err = readClients(*clients); err != nil {
			fmt.Fprintln(os.Stderr, "slurm-fetchd: -clients:", err)
			os.Exit(2)
		}
	}
	s, err := server.New(server.Config{
		Root: *root, TokenFile: *tokenFile, PollInterval: *poll, MaxWait: *maxWait,
		MaxUpload: *maxUpload, MaxAgents: *maxAgents, Retention: *retention, Owner: owner, Users: allowed, Clients: cls, Logger: log,
		MaxLongPolls: *maxPolls, MaxLongPollsPerPod: *podPolls,
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

// parseUsers reads name[=uid:gid],...; a bare name is looked up. Root is
// refused: a pod directory is handed to its user, who must not be root.
func parseUsers(list string) (map[string]server.Owner, error) {
	out := map[string]server.Owner{}
	for _, item := range strings.Split(list, ",") {
		if item = strings.TrimSpace(item); item == "" {
			continue
		}
		name, ids, explicit := strings.Cut(item, "=")
		var o server.Owner
		if explicit {
			u, g, ok := strings.Cut(ids, ":")
			var err1, err2 error
			o.UID, err1 = strconv.Atoi(u)
			o.GID, err2 = strconv.Atoi(g)
			if !ok || err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%q: want name=uid:gid", item)
			}
		} else {
			u, err := user.Lookup(name)
			if err != nil {
				return nil, err
			}
			o.UID, _ = strconv.Atoi(u.Uid)
			o.GID, _ = strconv.Atoi(u.Gid)
		}
		if o.UID <= 0 || o.GID <= 0 {
			return nil, fmt.Errorf("%s: uid %d gid %d: pod directories belong to an ordinary user, not root", name, o.UID, o.GID)
		}
		out[name] = o
	}
	return out, nil
}

// readClients reads the -clients file: "name token-file user,user..." a
// line; blank lines and # comments are skipped.
func readClients(path string) ([]server.Client, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []server.Client
	for i, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case len(f) != 3:
			return nil, fmt.Errorf("%s:%d: want: name token-file user,user...", path, i+1)
		}
		out = append(out, server.Client{Name: f[0], TokenFile: f[1], Users: strings.Split(f[2], ",")})
	}
	return out, nil
}
