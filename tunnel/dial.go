package tunnel

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// RefusedError is an answer other than 101 to a tunnel request.
type RefusedError struct {
	Status int
	Body   string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the fetch endpoint refused the tunnel: %d %s", e.Status, e.Body)
}

// Dial dials u (http or https), sends an HTTP/1.1 request asking to switch
// to the tunnel protocol (GET, with hdr), and returns the connection once
// the server answers 101; any other answer is a *RefusedError.
func Dial(ctx context.Context, u *url.URL, caFile string, hdr http.Header) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"https": "443"}[u.Scheme]+map[string]string{"http": "80"}[u.Scheme])
	}
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline) // until the answer (TLS handshake included): the session itself has none
	if u.Scheme == "https" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				conn.Close()
				return nil, err
			}
			tc.RootCAs = x509.NewCertPool()
			tc.RootCAs.AppendCertsFromPEM(pem)
		}
		tconn := tls.Client(conn, tc)
		if err := tconn.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		conn = tconn
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", Upgrade)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body := make([]byte, 512)
		n, _ := resp.Body.Read(body)
		conn.Close()
		return nil, &RefusedError{Status: resp.StatusCode, Body: strings.TrimSpace(string(body[:n]))}
	}
	conn.SetDeadline(time.Time{})
	return WithReader(conn, br), nil
}

// WithReader is conn reading through r, which holds what was buffered
// past an upgrade's headers.
func WithReader(conn net.Conn, r *bufio.Reader) net.Conn { return &bufConn{Conn: conn, r: r} }

type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
