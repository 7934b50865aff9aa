package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestNoSpaceIsNotRetried: a full file system (507) comes back at once
// with the endpoint's reason, and a call whose deadline cuts a retry
// short still names the endpoint's last answer.
func TestNoSpaceIsNotRetried(t *testing.T) {
	var n atomic.Int32
	status := atomic.Int32{}
	status.Store(http.StatusInsufficientStorage)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) > 1 && status.Load() == http.StatusServiceUnavailable {
			time.Sleep(time.Second) // the retry outlives the call's deadline
		}
		w.WriteHeader(int(status.Load()))
		w.Write([]byte(`{"error":"stage: no space left on the shared file system"}`))
	}))
	t.Cleanup(srv.Close)
	http1 := func(cfg *Config) { cfg.HTTP1 = true }
	c := newClient(t, srv.URL, http1)
	err := c.Stage(context.Background(), pod, "env", []byte("x"), 0o600)
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "no space left") || n.Load() != 1 {
		t.Errorf("507: %v after %d requests, want ErrNoSpace at once", err, n.Load())
	}

	status.Store(http.StatusServiceUnavailable)
	n.Store(0)
	c = newClient(t, srv.URL, http1, func(cfg *Config) { cfg.RetryFor = 300 * time.Millisecond })
	err = c.Stage(context.Background(), pod, "env", []byte("x"), 0o600)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "HTTP 503") {
		t.Errorf("503 then a retry cut by the deadline: %v, want the 503's reason kept", err)
	}
}
