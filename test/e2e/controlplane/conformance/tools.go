//go:build tools

package conformance

// agnhost, the image most e2e specs run, built from this module for the
// lab's registry (hack/conformance/images.sh).
import _ "k8s.io/kubernetes/test/images/agnhost"
