package provider

import (
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// serviceEnv is what a kubelet puts in every container's environment for
// services: the API server's ("kubernetes" in default) always, and with
// enableServiceLinks (the default) each service of the pod's namespace
// that has a cluster IP: NAME_SERVICE_HOST, NAME_SERVICE_PORT, one per
// named port, and Docker's link variables. A container's own env and
// envFrom win over them; $(VAR) in its env can refer to them.
//
// They name cluster IPs, which a compute node reaches only where the
// cluster's service network does; a kubelet gives them all the same.
func (t *translator) serviceEnv() (*envList, error) {
	if t.look.Services == nil {
		return &envList{}, nil
	}
	if t.services != nil {
		return t.services, nil
	}
	byName := map[string]*corev1.Service{}
	add := func(ns string, keep func(*corev1.Service) bool) error {
		list, err := t.look.Services(ns)
		if err != nil {
			return err
		}
		for _, s := range list {
			if s.Spec.ClusterIP == "" || s.Spec.ClusterIP == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 || !keep(s) {
				continue
			}
			if _, ok := byName[s.Name]; !ok || ns != "default" {
				byName[s.Name] = s
			}
		}
		return nil
	}
	links := t.pod.Spec.EnableServiceLinks == nil || *t.pod.Spec.EnableServiceLinks
	if links && t.pod.Namespace != "default" {
		if err := add(t.pod.Namespace, func(*corev1.Service) bool { return true }); err != nil {
			return nil, missing("ServicesNotListed", "the services of namespace %q: %v", t.pod.Namespace, err)
		}
	}
	// The API server's service, from default, over one of the pod's
	// namespace by that name; with links, default's other services too
	// when the pod is in default.
	if err := add("default", func(s *corev1.Service) bool { return s.Name == "kubernetes" || links && t.pod.Namespace == "default" }); err != nil {
		return nil, missing("ServicesNotListed", "the services of namespace default: %v", err)
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	slices.Sort(names)
	// Indexed: $(VAR) looks them up by name (expand's cost stays linear).
	t.services = &envList{}
	for _, n := range names {
		for _, v := range serviceVars(byName[n]) {
			t.services.put(v)
		}
	}
	return t.services, nil
}

// serviceVars are one service's variables, as the kubelet's envvars
// package makes them.
func serviceVars(s *corev1.Service) []envVar {
	prefix := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
	host := prefix + "_SERVICE_HOST"
	out := []envVar{{name: host, value: s.Spec.ClusterIP}, {name: prefix + "_SERVICE_PORT", value: strconv.Itoa(int(s.Spec.Ports[0].Port))}}
	for _, p := range s.Spec.Ports {
		if p.Name != "" {
			out = append(out, envVar{name: prefix + "_SERVICE_PORT_" + strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_")), value: strconv.Itoa(int(p.Port))})
		}
	}
	for i, p := range s.Spec.Ports {
		proto := corev1.ProtocolTCP
		if p.Protocol != "" {
			proto = p.Protocol
		}
		port, lower := strconv.Itoa(int(p.Port)), strings.ToLower(string(proto))
		url := lower + "://" + net.JoinHostPort(s.Spec.ClusterIP, port) // [an IPv6 address]
		if i == 0 {
			out = append(out, envVar{name: prefix + "_PORT", value: url})
		}
		pp := prefix + "_PORT_" + port + "_" + strings.ToUpper(string(proto))
		out = append(out,
			envVar{name: pp, value: url},
			envVar{name: pp + "_PROTO", value: lower},
			envVar{name: pp + "_PORT", value: port},
			envVar{name: pp + "_ADDR", value: s.Spec.ClusterIP})
	}
	return out
}
