#!/usr/bin/env bash
# The one test command (`make test`): lint, verify, unit tests, then the
# integration tests on each Slurm lab suite. Labs this script starts it also
# stops; a lab that was already up is reused and left running.
#
#   TEST_SUITES="trixie sid"   which lab suites to run the integration lane on
#   SKIP_E2E=1                 skip the end-to-end lanes (one per suite, on
#                              a control plane built from Go modules)
# Both narrow the run for a developer; under CI (CI set) they are refused,
# so no lane can vanish there. The last lines list the lanes that ran.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_SUITES=${TEST_SUITES:-trixie sid}
if [ -n "${CI:-}" ] && { [ "$TEST_SUITES" != "trixie sid" ] || [ -n "${SKIP_E2E:-}" ]; }; then
	echo "test.sh: CI runs every lane: unset TEST_SUITES ($TEST_SUITES) and SKIP_E2E (${SKIP_E2E:-})" >&2
	exit 1
fi
lanes=()

started=()
controlplane_started=
cleanup() {
	if [ -n "$controlplane_started" ]; then
		hack/controlplane/down.sh || true
	fi
	for s in "${started[@]}"; do
		LAB_SUITE=$s hack/lab/lab-down.sh || true
	done
}
trap cleanup EXIT

step() { printf '\n=== %s\n' "$*"; }
ran() { lanes+=("$1"); }

step "lint"
make --no-print-directory lint
ran lint
step "verify (generated code and go.mod are up to date)"
make --no-print-directory verify
ran verify

step "helm (pinned, built from its Go module once)"
HELM=$(hack/tools/helm.sh)
export HELM HELM_REQUIRED=1
ran "helm $($HELM version --short 2>/dev/null || echo built)"

for s in $TEST_SUITES; do
	env_file=.cache/lab/$s/lab.env
	if ! { [ -f "$env_file" ] && LAB_SUITE=$s bash -c '. hack/lab/common.sh; pid_alive slurmrestd'; }; then
		started+=("$s")
	fi
	step "lab $s"
	LAB_SUITE=$s hack/lab/lab-up.sh
	step "go test on lab $s"
	# One package at a time: they share one single-node cluster, and some
	# tests assert what Slurm does when nothing else runs (pending reasons).
	# Compiling is not slowed: lint has built everything already.
	SLURM_LAB_ENV=$PWD/$env_file SLURM_LAB_REQUIRED=1 go test -count=1 -p 1 -timeout 20m ./...
	ran "go test on lab $s"
	if [ -z "${SKIP_E2E:-}" ]; then
		step "end to end on a real control plane (lab $s)"
		if ! [ -s .cache/controlplane/env ]; then
			controlplane_started=1
		fi
		hack/controlplane/up.sh
		CONTROLPLANE_ENV=$PWD/.cache/controlplane/env SLURM_LAB_ENV=$PWD/$env_file SLURM_E2E_REQUIRED=1 \
			go test -count=1 -timeout 20m -v ./test/e2e/
		ran "end to end on lab $s"
	fi
done
step "lanes that ran"
printf '  %s\n' "${lanes[@]}"
