// Package fetchtest runs a real fetch endpoint in-process for tests: the
// same handler and protocols (HTTP/1.1 and h2c) as slurm-fetchd, on a
// loopback port, stopped when the test ends.
package fetchtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/slurmkube/slurm-vk/fetch/layout"
	"github.com/slurmkube/slurm-vk/fetch/server"
)

// Start serves cfg's root until t ends and returns the base URL. A nil
// Logger discards the server's logs.
func Start(t testing.TB, cfg server.Config) string {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(s)
	hs.Config.Protocols = server.Protocols()
	hs.Start()
	t.Cleanup(func() { hs.Close(); s.Close() })
	return hs.URL
}

// MakePodDirs fills root with n pod directories as ended jobs leave them
// (container main's log and exit marker); every deletedEvery-th one (0:
// none) carries a fresh deletion marker. For benchmarks at scale.
func MakePodDirs(tb testing.TB, root string, n, deletedEvery int) []layout.Pod {
	tb.Helper()
	pods := make([]layout.Pod, n)
	for i := range pods {
		pods[i] = layout.Pod{Namespace: "bench", Name: fmt.Sprintf("work-%d", i), UID: fmt.Sprintf("6f1c2a9e-0000-4000-8000-%012d", i)}
		dir := filepath.Join(root, pods[i].Dir())
		if err := os.MkdirAll(filepath.Join(dir, "main"), 0o755); err != nil {
			tb.Fatal(err)
		}
		files := map[string]string{layout.LogFile("main", 0): "started\ndone\n", layout.ExitFile("main", 0): "0\n"}
		if deletedEvery > 0 && i%deletedEvery == 0 {
			files[layout.DeletedMarker] = ""
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return pods
}

// Listening reads slurm-fetchd's log (its JSON lines on stderr) and sends
// the address of its "listening" line, so a test can start it with
// -listen 127.0.0.1:0 and no port is picked, freed and hoped for. It then
// drains the log until it ends (the process exits) and closes the channel;
// a channel closed before any address means slurm-fetchd never listened.
func Listening(log io.Reader) <-chan string {
	addr := make(chan string, 1)
	go func() {
		defer close(addr)
		sc := bufio.NewScanner(log)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" && line.Addr != "" {
				addr <- line.Addr
				sent = true
			}
		}
		io.Copy(io.Discard, log)
	}()
	return addr
}
