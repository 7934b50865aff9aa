#!/usr/bin/env bash
# Build the upstream e2e suite (test/e2e/controlplane/conformance: sig-node,
# the common specs and kubectl's), agnhost, the image most specs run, and nnp,
# from the k8s.io/kubernetes module pinned for the lab's control plane,
# into .cache/conformance (git-ignored), and print that directory. The same
# flags as the control plane's binaries, so the packages they share are
# built once. A warm cache returns at once.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=$(sed -n 's/^VERSION=//p' "$REPO_ROOT/hack/controlplane/build.sh")
OUT=${CONFORMANCE_CACHE:-$REPO_ROOT/.cache/conformance}
mkdir -p "$OUT"
. "$REPO_ROOT/hack/lib/kube-ldflags.sh"
ldflags=$(kube_ldflags "$VERSION")
cd "$REPO_ROOT/test/e2e/controlplane"
stamp=$OUT/stamp
want="$VERSION $(go version | cut -d' ' -f3) $(sha256sum go.sum conformance/*.go | sha256sum | cut -c1-16)"
# nnp, the nonewprivs image's program (test/conformance/nnp), is small:
# built every time.
(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -o "$OUT/nnp" ./test/conformance/nnp)
if [ -x "$OUT/e2e.test" ] && [ -x "$OUT/agnhost" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
	echo "$OUT"
	exit 0
fi
echo "building the e2e suite $VERSION (cold: about ten minutes on 2 cores)" >&2
go test -c -trimpath -ldflags "$ldflags" -o "$OUT/e2e.test.tmp" ./conformance
mv "$OUT/e2e.test.tmp" "$OUT/e2e.test"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/agnhost.tmp" k8s.io/kubernetes/test/images/agnhost
mv "$OUT/agnhost.tmp" "$OUT/agnhost"
echo "$want" >"$stamp"
echo "$OUT"
