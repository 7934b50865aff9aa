// Package fetchtest runs a real fetch endpoint in-process for tests: the
// same handler and protocols (HTTP/1.1 and h2c) as slurm-fetchd, on a
// loopback port, stopped when the test ends.
package fetchtest

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"

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
