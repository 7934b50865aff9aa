#!/usr/bin/env bash
# Stop the control plane's processes, by their recorded PIDs.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${CONTROLPLANE_CACHE:-$REPO_ROOT/.cache/controlplane}/run
. "$REPO_ROOT/hack/lib/pids.sh"
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
	pid_stop "$RUN" "$name" 10
done
rm -f "${CONTROLPLANE_CACHE:-$REPO_ROOT/.cache/controlplane}/env"
echo "controlplane: down" >&2
