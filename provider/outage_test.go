package provider

import (
	"context"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/slurmclient"
)

// cutProxy forwards TCP to a target until cut, and again after restore,
// on the same address: slurmrestd "stopped" without touching the lab.
type cutProxy struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{target: target, conns: map[net.Conn]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	p.serve(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *cutProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

// cut closes the listener and every connection.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *cutProxy) restore(t *testing.T) {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.serve(ln)
}

// TestLabSlurmrestdOutage: slurmrestd is unreachable for a while (10 s) while a
// pod runs. The node turns NotReady with the reason, no pod is failed for
// it, and when slurmrestd returns the node is Ready and the pod completes.
func TestLabSlurmrestdOutage(t *testing.T) {
	r := newLabRig(t)
	outage := 10 * time.Second // the same transitions as a longer one; SLURM_VK_OUTAGE_SECONDS for more
	if v, err := strconv.Atoi(os.Getenv("SLURM_VK_OUTAGE_SECONDS")); err == nil && v > 0 {
		outage = time.Duration(v) * time.Second
	}
	u, _ := url.Parse(r.lab.URL)
	proxy := newCutProxy(t, u.Host)
	var err error
	r.slurm, err = slurmclient.New(slurmclient.Config{URL: "http://" + proxy.addr, User: r.lab.User, TokenFile: r.lab.TokenFile, RetryFor: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	p := r.start()
	ctx := context.Background()
	var node corev1.Node
	np := NewNodeProvider(NodeConfig{Name: "outage", Partition: r.lab.Partition, MaxPods: 10, InternalIP: "127.0.0.1", KubeletPort: 10250, Interval: time.Second}, r.slurm, &node)
	np.Prime(ctx, &node)
	var mu sync.Mutex
	var nodeStates []string
	np.NotifyNodeStatus(r.ctx(t), func(n *corev1.Node) {
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				mu.Lock()
				nodeStates = append(nodeStates, string(c.Status)+"/"+c.Reason)
				mu.Unlock()
			}
		}
	})
	readyNow := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(nodeStates) == 0 {
			return "True/SlurmReachable" // the initial state, checked below
		}
		return nodeStates[len(nodeStates)-1]
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue {
			t.Fatalf("node not ready before the outage: %+v", c)
		}
	}

	pod := labPod("patient", sh("main", "echo start; sleep "+strconv.Itoa(int(outage.Seconds())/2)+"; echo end"))
	if err := p.CreatePod(ctx, pod); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, pod, "running", phase(corev1.PodRunning))

	proxy.cut()
	start := time.Now()
	for time.Since(start) < 60*time.Second && readyNow() != "False/SlurmUnreachable" {
		time.Sleep(200 * time.Millisecond)
	}
	if got := readyNow(); got != "False/SlurmUnreachable" {
		t.Fatalf("node Ready %s during the outage", got)
	}
	time.Sleep(outage - time.Since(start))
	proxy.restore(t)

	r.waitFor(t, pod, "succeeded after the outage", phase(corev1.PodSucceeded))
	for time.Since(start) < outage+60*time.Second && readyNow() != "True/SlurmReachable" {
		time.Sleep(200 * time.Millisecond)
	}
	if got := readyNow(); got != "True/SlurmReachable" {
		t.Fatalf("node Ready %s after the outage", got)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, u := range r.updates[pod.UID] {
		if u.Status.Phase == corev1.PodFailed {
			t.Fatalf("the pod was reported Failed during the outage: %s %s", u.Status.Reason, u.Status.Message)
		}
	}
	if got := logsOf(t, p, pod, "main", apiOpts()); got != "start\nend\n" {
		t.Errorf("logs %q", got)
	}
}
