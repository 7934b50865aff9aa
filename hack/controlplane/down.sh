#!/usr/bin/env bash
# Stop the control plane's processes, by their recorded PIDs.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN=${CONTROLPLANE_CACHE:-$REPO_ROOT/.cache/controlplane}/run
for name in kube-scheduler kube-controller-manager kube-apiserver etcd; do
	f=$RUN/$name.pid
	[ -s "$f" ] || continue
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	fi
	rm -f "$f"
done
rm -f "${CONTROLPLANE_CACHE:-$REPO_ROOT/.cache/controlplane}/env"
echo "controlplane: down" >&2
