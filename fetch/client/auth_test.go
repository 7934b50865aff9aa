package client

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/server"
)

// swapToken rotates a token the way a Kubernetes Secret volume does: the
// new value in a new directory, then an atomic swap of the symlink.
func swapToken(t *testing.T, link, value string) {
	t.Helper()
	dir, err := os.MkdirTemp(filepath.Dir(link), "..data-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := link + ".tmp"
	if err := os.Symlink(filepath.Join(dir, "token"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
}

// TestTokenRotation: both sides' tokens rotate without a restart. A server
// rotated first refuses the old token with ErrUnauthorized (never a
// retry storm); once the client's file has the new one, the same Client
// is let in. A token rewritten in place so that its file looks unchanged
// (same size, inode and mtime: a file system with coarse times) is
// picked up by the client's forced re-read after the 401.
func TestTokenRotation(t *testing.T) {
	f := newFixture(t)
	base := t.TempDir()
	serverToken, clientToken := filepath.Join(base, "server-token"), filepath.Join(base, "client-token")
	swapToken(t, serverToken, "token-one")
	swapToken(t, clientToken, "token-one")
	url, _ := fetchtestStart(t, server.Config{Root: f.root, TokenFile: serverToken}, nil)
	c := newClient(t, url, func(cfg *Config) { cfg.TokenFile = clientToken })
	ctx := context.Background()
	if _, err := c.Info(ctx, pod, "main", 0, -1); err != nil {
		t.Fatalf("before rotation: %v", err)
	}

	swapToken(t, serverToken, "token-two")
	if _, err := c.Info(ctx, pod, "main", 0, -1); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("old token after the server rotated: %v, want ErrUnauthorized", err)
	}
	swapToken(t, clientToken, "token-two")
	if _, err := c.Info(ctx, pod, "main", 0, -1); err != nil {
		t.Fatalf("both rotated: %v", err)
	}

	// In place, same size, mtime put back: only a forced read sees it.
	swapToken(t, serverToken, "token-3ee")
	target, _ := filepath.EvalSymlinks(clientToken)
	st, _ := os.Stat(target)
	if err := os.WriteFile(target, []byte("token-3ee\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(target, st.ModTime(), st.ModTime())
	if _, err := c.Info(ctx, pod, "main", 0, -1); err != nil {
		t.Fatalf("token rewritten in place: %v, want the forced re-read to find it", err)
	}
}

// TestTLS: an https endpoint is verified against the configured CA, and
// the multiplexed client speaks HTTP/2 to it (ALPN); without the CA the
// call fails on the certificate; a CA file without a certificate is
// refused when the client is made.
func TestTLS(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	protos := map[int]int{}
	url, cert := fetchtestStart(t, server.Config{Root: f.root, TokenFile: f.tokenFile}, func(r *http.Request) {
		mu.Lock()
		protos[r.ProtoMajor]++
		mu.Unlock()
	})
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, cert, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c := newClient(t, url, func(cfg *Config) { cfg.CAFile = ca })
	if _, err := c.Info(ctx, pod, "main", 0, -1); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	mu.Lock()
	if protos[2] == 0 {
		t.Errorf("requests by HTTP version %v: want HTTP/2 over TLS", protos)
	}
	mu.Unlock()

	// A certificate that does not verify is final: the first answer,
	// whatever time retries were given.
	plain := newClient(t, url, func(cfg *Config) { cfg.RetryFor = 20 * time.Second })
	var unknown x509.UnknownAuthorityError
	if _, err := plain.Info(ctx, pod, "main", 0, -1); !errors.As(err, &unknown) || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("without the CA: %v, want an unknown-authority error at once, not retried", err)
	}

	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not a certificate\n"), 0o644)
	if _, err := New(Config{URL: url, TokenFile: f.tokenFile, CAFile: bad}); err == nil {
		t.Error("a CA file without certificates was accepted")
	}
}

// fetchtestStart is fetchtest.Start, or, when seen is set (it sees every
// request), the same over https, with the server certificate's PEM.
func fetchtestStart(t *testing.T, cfg server.Config, seen func(*http.Request)) (url string, certPEM []byte) {
	t.Helper()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var h http.Handler = s
	if seen != nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen(r); s.ServeHTTP(w, r) })
	}
	hs := httptest.NewUnstartedServer(h)
	hs.Config.Protocols = server.Protocols()
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the test
	if seen != nil {
		hs.EnableHTTP2 = true
		hs.StartTLS()
		certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
	} else {
		hs.Start()
	}
	t.Cleanup(func() { hs.Close(); s.Close() })
	return hs.URL, certPEM
}
