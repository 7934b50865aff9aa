package provider

import (
	"fmt"
	"net/netip"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/slurmkube/slurm-vk/fetch/layout"
)

// A pod's /etc/hosts is written as a kubelet writes it: a pod on the
// pod network gets a managed file (the kubelet's header and localhost
// lines, then its address and hostname: here the node's address, which
// is the pod's), a hostNetwork pod the node's own file under the
// kubelet's host-network header; both end with the pod's hostAliases.
// The job script writes it once (layout.HostsFile) and each container
// that does not mount /etc/hosts itself gets it bound there. Runtime
// none runs on the node itself: its /etc/hosts is the node's, and a pod
// with hostAliases is refused there.

const (
	managedHostsHeader            = "# Kubernetes-managed hosts file.\n"
	managedHostsHeaderHostNetwork = "# Kubernetes-managed hosts file (host network).\n"
	managedHostsLocal             = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
)

// hostLabel is a DNS subdomain's form, as the API server checks
// hostnames: nothing a hosts file line could be split or extended by.
var hostLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)

// hostAliases renders the pod's hostAliases as the kubelet appends them,
// each checked again here (they become lines of a file in every
// container).
func hostAliases(pod *corev1.Pod) (string, error) {
	if len(pod.Spec.HostAliases) == 0 {
		return "", nil
	}
	var b strings.Builder
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, a := range pod.Spec.HostAliases {
		if _, err := netip.ParseAddr(a.IP); err != nil {
			return "", invalid("InvalidHostAliases", "hostAliases: %q is not an IP address", a.IP)
		}
		for _, h := range a.Hostnames {
			if len(h) > 253 || !hostLabel.MatchString(h) {
				return "", invalid("InvalidHostAliases", "hostAliases: %q is not a DNS name", h)
			}
		}
		fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
	}
	return b.String(), nil
}

// podHostname is the pod's hostname as a kubelet gives it: spec.hostname,
// else its name, at most 63 characters.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// etcHosts decides whether the pod's /etc/hosts is written, and returns
// the script's lines that write it ("" when the runtime runs on the node
// itself). It sets t.hosts, the file's path, and t.hostIP when the file
// needs the node's address.
func (t *translator) etcHosts() (string, error) {
	aliases, err := hostAliases(t.pod)
	if err != nil {
		return "", err
	}
	if !t.rt.image {
		if aliases != "" {
			return "", invalid("UnsupportedHostAliases", "hostAliases: with runtime %s the command runs on the node itself, whose /etc/hosts is the node's; use a container runtime", t.runtime)
		}
		return "", nil
	}
	t.hosts = t.ref.Path(t.cfg.SharedRoot, layout.HostsFile)
	var body string
	if t.pod.Spec.HostNetwork {
		body = "cat /etc/hosts"
	} else {
		h := podHostname(t.pod)
		if !hostLabel.MatchString(h) {
			return "", invalid("InvalidHostname", "hostname %q is not a DNS name", h)
		}
		t.hostIP = true
		body = fmt.Sprintf("printf '%%s\\t%%s\\n' \"$%s\" %s", hostIPVar, shq(h))
	}
	header := managedHostsHeader + managedHostsLocal
	if t.pod.Spec.HostNetwork {
		header = managedHostsHeaderHostNetwork
	}
	if aliases != "" {
		body += "; printf '%s' " + shq(aliases)
	}
	return fmt.Sprintf("svk_hosts=%s\n{ printf '%%s' %s; %s; } >\"$svk_hosts.tmp\" && mv -f \"$svk_hosts.tmp\" \"$svk_hosts\" || exit 125\n",
		shq(t.hosts), shq(header), body), nil
}

// mountsEtcHosts tells whether the container mounts a volume at
// /etc/hosts (then it is its own, as on a kubelet).
func mountsEtcHosts(c *corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if strings.TrimRight(m.MountPath, "/") == "/etc/hosts" {
			return true
		}
	}
	return false
}
