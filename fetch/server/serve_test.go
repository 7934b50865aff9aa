package server

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// TestServe runs the real listener: the janitor sweeps while it serves,
// and a cancelled context shuts it down gracefully, releasing a waiting
// long-poll at once rather than after its minute.
func TestServe(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Retention, c.MaxWait = time.Millisecond, 10*time.Minute })
	e.do("PUT", podURL(testPod), nil)
	e.writeLog("main", 0, "output\n", nil)
	gone := layout.Pod{Namespace: "default", Name: "gone", UID: "0b7c6e3a-9999-2222-3333-444455556666"}
	e.do("PUT", podURL(gone), nil)
	if code, _, _ := e.do("DELETE", podURL(gone), nil); code != 204 {
		t.Fatal(code)
	}
	time.Sleep(5 * time.Millisecond) // past the retention
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() {
		served <- e.srv.Serve(ctx, ServeOptions{Addr: "127.0.0.1:0", Ready: func(a net.Addr) { addr <- a }})
	}()
	base := "http://" + (<-addr).String()

	// The janitor runs: the deleted pod's directory goes.
	deadline := time.Now().Add(30 * time.Second) // generous: two busy cores
	for {
		if _, err := os.Stat(filepath.Join(e.root, gone.Dir())); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the janitor did not remove a deleted pod's directory past its retention")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A long-poll waits; shutting down answers it.
	req, _ := http.NewRequest("GET", base+podURL(testPod)+"/containers/main/log?offset=7&wait=600s", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	polled := make(chan error, 1)
	start := time.Now()
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		polled <- err
	}()
	for e.srv.waiting() == 0 {
		if time.Since(start) > 5*time.Minute {
			t.Fatal("the long-poll never started waiting")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve after its context ended: %v, want nil", err)
	}
	<-polled
	// Well under the poll's ten minutes, however busy the machine: it was
	// released by the shutdown, not by its wait running out.
	if d := time.Since(start); d > 5*time.Minute {
		t.Errorf("the long-poll ended %v after it started", d)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("still serving after Serve returned")
	}
}
