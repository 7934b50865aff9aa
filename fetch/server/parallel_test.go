package server_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/slurmkube/slurm-vk/fetch/fetchtest"
	"github.com/slurmkube/slurm-vk/fetch/server"
)

// TestTenThousandParallelRequests: 10,000 requests at once, over HTTP/2
// as the provider sends them: info and log reads that wait, on 50 pods.
// Each is answered (200, or 429/503 beyond the long-poll caps), the
// server still answers afterwards, and its goroutines are gone.
func TestTenThousandParallelRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	root := t.TempDir()
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("t"), 0o600)
	const pods = 50
	for i := range pods {
		dir := filepath.Join(root, fmt.Sprintf("ns_p%d_u%d", i, i), "main")
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "0.log"), []byte("hello\n"), 0o644)
	}
	url := fetchtest.Start(t, server.Config{Root: root, TokenFile: tok, MaxLongPolls: 1000, MaxLongPollsPerPod: 16})
	tr := &http.Transport{Protocols: server.Protocols()}
	tr.Protocols.SetHTTP1(false) // h2c only: streams, not 10,000 connections
	tr.MaxConnsPerHost = 16      // x 1,000 streams each: all 10,000 at once
	client := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	before := runtime.NumGoroutine()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // generous: the waits are 2s
	defer cancel()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range 10000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := fmt.Sprintf("/v1/pods/ns/p%d/u%d/containers/main/", i%pods, i%pods)
			if i%2 == 0 {
				p += "info"
			} else {
				p += "log?offset=6&wait=2s"
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", url+p, nil)
			req.Header.Set("Authorization", "Bearer t")
			code := -1
			if resp, err := client.Do(req); err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if codes[-1] > 0 || codes[200]+codes[429]+codes[503] != 10000 {
		t.Fatalf("answers by status: %v; want every one 200, 429 or 503", codes)
	}
	if codes[200] < 5000 {
		t.Errorf("answers by status: %v; every info read (5,000) should be 200", codes)
	}
	t.Logf("answers by status: %v", codes)
	req, _ := http.NewRequest("GET", url+"/healthz", nil)
	if resp, err := client.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("after the storm /healthz: %v %v", resp, err)
	}
	tr.CloseIdleConnections()
	for deadline := time.Now().Add(30 * time.Second); runtime.NumGoroutine() > before+20; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines left, %d before", runtime.NumGoroutine(), before)
		}
	}
}
