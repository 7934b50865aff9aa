package main

import (
	"net/http"
	"net/http/httptest"
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
