package main

import (
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// TestStreamsNeedCreate: exec, attach and port-forward are authorized as
// create on nodes/proxy whatever the method (a WebSocket is a GET), so a
// caller granted only get nodes/proxy cannot run anything; logs, stats
// and the rest keep the kubelet's verbs.
func TestStreamsNeedCreate(t *testing.T) {
	a := writeVerbForStreams{withAttrs{nodeutil.NoAuth(), nodeutil.NodeRequestAttr{NodeName: "n"}}}
	u := &user.DefaultInfo{Name: "scraper"}
	for _, tt := range []struct {
		method, path, verb, sub string
	}{
		{"GET", "/exec/ns/pod/main?command=id&output=1", "create", "proxy"},
		{"POST", "/exec/ns/pod/main?command=id", "create", "proxy"},
		{"GET", "/attach/ns/pod/main?output=1", "create", "proxy"},
		{"GET", "/portForward/ns/pod?port=80", "create", "proxy"},
		{"GET", "/run/ns/pod/main", "create", "proxy"},
		{"GET", "/containerLogs/ns/pod/main", "get", "proxy"},
		{"GET", "/stats/summary", "get", "stats"},
		{"GET", "/pods", "get", "proxy"},
		{"GET", "/execute", "get", "proxy"},
	} {
		r := httptest.NewRequest(tt.method, tt.path, nil)
		got := a.GetRequestAttributes(u, r)
		if got.GetVerb() != tt.verb || got.GetSubresource() != tt.sub || got.GetResource() != "nodes" || got.GetName() != "n" {
			t.Errorf("%s %s: %s nodes/%s %s, want %s nodes/%s", tt.method, tt.path, got.GetVerb(), got.GetSubresource(), got.GetName(), tt.verb, tt.sub)
		}
	}
}

// withAttrs is an Auth with virtual-kubelet's own attributes for node n.
type withAttrs struct {
	nodeutil.Auth
	attrs nodeutil.NodeRequestAttr
}

func (w withAttrs) GetRequestAttributes(u user.Info, r *http.Request) authorizer.Attributes {
	return w.attrs.GetRequestAttributes(u, r)
}

// TestBearerTokenWithoutClientCert: with -client-ca the kubelet API still
// takes a caller with no client certificate as far as the authenticator
// (which checks its bearer token), as a kubelet does; a certificate from
// another CA is refused in the handshake.
func TestBearerTokenWithoutClientCert(t *testing.T) {
	caCert, err := selfSigned("client-ca", "")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := tlsOptions(&options{NodeName: "n", NodeIP: "127.0.0.1", ClientCA: caFile})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // the authenticator's answer
	}))
	srv.TLS = &tls.Config{}
	for _, o := range opts {
		if err := o(srv.TLS); err != nil {
			t.Fatal(err)
		}
	}
	srv.StartTLS()
	defer srv.Close()

	get := func(certs ...tls.Certificate) (*http.Response, error) {
		cfg := &tls.Config{InsecureSkipVerify: true}
		if len(certs) > 0 { // sent even though the server names other CAs
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		return hc.Get(srv.URL + "/pods")
	}
	resp, err := get()
	if err != nil {
		t.Fatalf("no client certificate: %v, want the request to reach the authenticator", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no client certificate: HTTP %d, want the authenticator's 401", resp.StatusCode)
	}
	stranger, err := selfSigned("stranger", "")
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := get(stranger); err == nil {
		resp.Body.Close()
		t.Errorf("a client certificate from another CA: HTTP %d, want a refused handshake", resp.StatusCode)
	}
}
