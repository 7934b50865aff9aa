# kube_ldflags VERSION prints the -ldflags the control plane's binaries and
# the e2e suite are built with: the same flags, so the packages they share
# are compiled once.
kube_ldflags() {
	local major=${1#v} minor pkg flags="-s -w"
	minor=${major#*.}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$1 -X $pkg.gitMajor=${major%%.*} -X $pkg.gitMinor=${minor%%.*}"
		flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	printf '%s' "$flags"
}
