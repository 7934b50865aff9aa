#!/usr/bin/env bash
# Build the pinned helm from its Go module into .cache/bin (once: ~3.5 min
# cold) and print its path. Helm's own go.mod decides its dependencies, so
# they stay out of ours.
set -euo pipefail
HELM_VERSION=v4.3.1
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$REPO_ROOT/.cache/bin
# A module build reports only vMAJOR.MINOR, so a stamp records the version.
if ! [ -x "$BIN/helm" ] || [ "$(cat "$BIN/helm.version" 2>/dev/null)" != "$HELM_VERSION" ]; then
	echo "building helm $HELM_VERSION into $BIN (first time: a few minutes)" >&2
	GOBIN=$BIN go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
	echo "$HELM_VERSION" >"$BIN/helm.version"
fi
echo "$BIN/helm"
