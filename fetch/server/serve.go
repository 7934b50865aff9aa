package server

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// ServeOptions says where and how to listen.
type ServeOptions struct {
	Addr              string // host:port
	CertFile, KeyFile string // TLS when both are set
	// ShutdownGrace bounds the wait for requests in flight at shutdown
	// (default 10s). Long-polls are released at once.
	ShutdownGrace time.Duration
	// Ready, if set, receives the bound address once listening.
	Ready func(net.Addr)
}

// Serve serves s until ctx ends, then shuts down gracefully. It runs the
// janitor too.
func (s *Server) Serve(ctx context.Context, o ServeOptions) error {
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 10 * time.Second
	}
	// Requests see base's context: cancelling it at shutdown ends waiting
	// long-polls, whose clients resume elsewhere or after a restart.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		// An answer, long-polls included, must be written within a minute
		// of the longest wait; a staged file's body has its own read
		// deadline (stage). No ReadTimeout: net/http cancels a request's
		// context when it passes, long-polls included.
		WriteTimeout:   s.cfg.MaxWait + time.Minute,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 16 << 10,
		BaseContext:    func(net.Listener) context.Context { return base },
		TLSConfig:      &tls.Config{MinVersion: tls.VersionTLS12},
		// HTTP/2 (h2c on plain HTTP) lets a provider multiplex its follow
		// streams over a few connections; HTTP/1.1 still works (curl).
		Protocols: Protocols(),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: 1000},
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return err
	}
	if o.Ready != nil {
		o.Ready(ln.Addr())
	}
	// The janitor is ours: it ends with base, and Serve waits for it, so
	// nothing touches the root after Serve returns.
	var janitor sync.WaitGroup
	janitor.Go(func() { s.Janitor(base, time.Minute) })
	defer func() { cancelBase(); janitor.Wait() }()
	errc := make(chan error, 1)
	go func() {
		if o.CertFile != "" && o.KeyFile != "" {
			errc <- hs.ServeTLS(ln, o.CertFile, o.KeyFile)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	cancelBase()
	sctx, cancel := context.WithTimeout(context.Background(), o.ShutdownGrace)
	defer cancel()
	err = hs.Shutdown(sctx)
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Protocols are the HTTP versions slurm-fetchd serves: HTTP/1.1, and
// HTTP/2 over TLS or in the clear (h2c), which the client uses by default.
func Protocols() *http.Protocols {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return &p
}
