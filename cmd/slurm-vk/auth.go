package main

import (
	"net/http"
	"strings"

	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// streamingPaths are the kubelet API's routes that run something in a
// container or reach into its network: exec, attach and port-forward
// (and run, which is exec by another name).
var streamingPaths = []string{"/exec/", "/attach/", "/portForward/", "/run/"}

// writeVerbForStreams asks the API server whether the caller may create
// nodes/proxy for the streaming routes, whatever the HTTP method. The
// kubelet (and virtual-kubelet) take the verb from the method, so a
// WebSocket upgrade, a GET, needs only get nodes/proxy: the grant a
// metrics scraper is given would run commands in every container of the
// node. Every other route keeps the kubelet's mapping.
type writeVerbForStreams struct{ nodeutil.Auth }

func (a writeVerbForStreams) GetRequestAttributes(u user.Info, r *http.Request) authorizer.Attributes {
	attrs := a.Auth.GetRequestAttributes(u, r)
	rec, ok := attrs.(authorizer.AttributesRecord)
	if !ok {
		return attrs
	}
	for _, p := range streamingPaths {
		if strings.HasPrefix(r.URL.Path, p) {
			rec.Verb = "create"
			rec.Subresource = "proxy"
		}
	}
	return rec
}
