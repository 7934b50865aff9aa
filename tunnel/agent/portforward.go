package agent

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/slurmkube/slurm-vk/tunnel"
)

// portForward connects to req.Port on the job's node (the containers of
// every runtime slurm-vk starts share the node's network: podman runs
// with --network=host) and carries the bytes both ways, with half-closes,
// until both directions have ended. It returns how it ended.
func portForward(ctx context.Context, st net.Conn, req tunnel.Request) tunnel.Exit {
	if req.Port < 1 || req.Port > 65535 {
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("port %d: want 1-65535", req.Port)}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(req.Port)))
	if err != nil {
		return tunnel.Exit{Code: -1, Error: fmt.Sprintf("nothing listens on port %d on the job's node: %v", req.Port, err)}
	}
	tcp := conn.(*net.TCPConn)
	defer tcp.Close()
	stop := context.AfterFunc(ctx, func() { tcp.Close() })
	defer stop()
	var mu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(2)
	// The job's port → the session, then a half-close.
	go func() {
		defer wg.Done()
		io.Copy(&tunnel.FrameWriter{W: st, Typ: tunnel.FrameData, Mu: &mu}, tcp)
		mu.Lock()
		tunnel.WriteFrame(st, tunnel.FrameCloseWrite, nil)
		mu.Unlock()
	}()
	// The session → the job's port; the session ending closes the port's
	// connection (which ends the copy above).
	go func() {
		defer wg.Done()
		var buf []byte
		for {
			typ, p, err := tunnel.ReadFrame(st, buf)
			if err != nil {
				tcp.Close()
				return
			}
			buf = p[:0]
			switch typ {
			case tunnel.FrameData:
				if _, err := tcp.Write(p); err != nil {
					tcp.Close()
					return
				}
			case tunnel.FrameCloseWrite:
				tcp.CloseWrite()
				return
			}
		}
	}()
	wg.Wait()
	return tunnel.Exit{}
}
