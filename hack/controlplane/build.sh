#!/usr/bin/env bash
# Build kube-apiserver, kube-scheduler, kube-controller-manager and etcd from
# the pinned Go modules in test/e2e/controlplane into
# .cache/controlplane/<version>/bin (git-ignored). A warm cache returns at once.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VERSION=v1.37.2
OUT=${CONTROLPLANE_CACHE:-$REPO_ROOT/.cache/controlplane}/$VERSION/bin
bins="kube-apiserver kube-scheduler kube-controller-manager etcd"
missing=
for b in $bins; do [ -x "$OUT/$b" ] || missing=1; done
if [ -z "$missing" ]; then
	echo "$OUT"
	exit 0
fi
mkdir -p "$OUT"
. "$REPO_ROOT/hack/lib/kube-ldflags.sh"
ldflags=$(kube_ldflags "$VERSION")
echo "building the control plane $VERSION (cold: several minutes on 2 cores)" >&2
cd "$REPO_ROOT/test/e2e/controlplane"
for b in $bins; do
	go build -trimpath -ldflags "$ldflags" -o "$OUT/$b.tmp" "./cmd/$b"
	mv "$OUT/$b.tmp" "$OUT/$b"
done
echo "$OUT"
