#!/usr/bin/env bash
# The one test command (`make test`): lint, verify, the unit lane (once,
# with the race detector, no lab), then on each Slurm lab suite the lab
# lane (the TestLab* tests, against real Slurm) and the end-to-end lane (a
# real control plane). Labs and the control plane this script starts it
# also stops; ones that were already up are reused and left running.
#
#   TEST_SUITES="trixie sid"   which lab suites to run the lab lanes on
#   SKIP_E2E=1                 skip the end-to-end lanes
# Both narrow the run for a developer; under CI (CI set) they are refused,
# so no lane can vanish there.
#
# Every lane runs `go test -json` through hack/testreport, which fails the
# lane on any skipped test that hack/test-skips.txt does not allow (with
# its reason), and the last lines give each lane's counts and time.
set -euo pipefail
cd "$(dirname "$0")/.."
TEST_SUITES=${TEST_SUITES:-trixie sid}
if [ -n "${CI:-}" ] && { [ "$TEST_SUITES" != "trixie sid" ] || [ -n "${SKIP_E2E:-}" ]; }; then
	echo "test.sh: CI runs every lane: unset TEST_SUITES ($TEST_SUITES) and SKIP_E2E (${SKIP_E2E:-})" >&2
	exit 1
fi
if [ -n "${CI:-}" ] && [ -n "${GOFLAGS:-}" ] && [ "$GOFLAGS" != -buildvcs=false ]; then
	echo "test.sh: CI runs every test: GOFLAGS=$GOFLAGS would change what runs (.ci/run clears it)" >&2
	exit 1
fi

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

began=$SECONDS
step() { printf '\n=== %s (at %ds)\n' "$*" $((SECONDS - began)); }
record=.cache/test-report.tsv
mkdir -p .cache
: >"$record"

step "lint"
make --no-print-directory lint
step "verify (generated code and go.mod are up to date)"
make --no-print-directory verify

step "helm (pinned, built from its Go module once)"
HELM=$(hack/tools/helm.sh)
export HELM HELM_REQUIRED=1

# systemd-analyze checks the fetch endpoint's unit file; a machine without
# systemd gets the package (the test fails, rather than skips, without it).
if ! command -v systemd-analyze >/dev/null; then
	step "installing systemd (systemd-analyze, for the unit file's test)"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

step "build the binaries once (static, into .cache/test-bin)"
export SLURM_VK_TEST_BIN=$PWD/.cache/test-bin
rm -rf "$SLURM_VK_TEST_BIN"
CGO_ENABLED=0 go build -o "$SLURM_VK_TEST_BIN/" ./cmd/... ./internal/testshim
go build -o .cache/bin/testreport ./hack/testreport

# lane NAME [testreport flags] -- go test args: one go test -json through
# the report; its verdict (and go test's) is the lane's.
lane() {
	local name=$1
	shift
	local flags=()
	while [ "$1" != -- ]; do flags+=("$1"); shift; done
	shift
	step "lane $name"
	go test -json -count=1 "$@" 2>&1 | .cache/bin/testreport -lane "$name" -allow hack/test-skips.txt -record "$record" "${flags[@]}"
}

# The unit lane: every package's tests but the lab's and the end-to-end
# ones, once, two packages at a time, under the race detector.
mapfile -t pkgs < <(go list ./... | grep -v '/test/e2e$')
SLURM_LAB_ENV= lane unit -- -race -timeout 15m -skip '^(TestLab|BenchmarkLab)' "${pkgs[@]}"

if [ -z "${SKIP_E2E:-}" ]; then
	step "the upstream e2e suite (built once from the control plane's module)"
	hack/conformance/build.sh >/dev/null
fi

for s in $TEST_SUITES; do
	env_file=.cache/lab/$s/lab.env
	if ! { [ -f "$env_file" ] && LAB_SUITE=$s bash -c '. hack/lab/common.sh; pid_alive slurmrestd'; }; then
		started+=("$s")
	fi
	step "lab $s"
	LAB_SUITE=$s hack/lab/lab-up.sh
	# One package at a time: they share one cluster, and some tests assert
	# what Slurm does when nothing else runs (pending reasons).
	SLURM_LAB_ENV=$PWD/$env_file SLURM_LAB_REQUIRED=1 \
		lane "lab-$s" -tests -- -p 1 -timeout 20m -run '^TestLab' "${pkgs[@]}"
	if [ -z "${SKIP_E2E:-}" ]; then
		step "control plane"
		if ! [ -s .cache/controlplane/env ]; then
			controlplane_started=1
		fi
		hack/controlplane/up.sh
		CONTROLPLANE_ENV=$PWD/.cache/controlplane/env SLURM_LAB_ENV=$PWD/$env_file SLURM_LAB_REQUIRED=1 SLURM_E2E_REQUIRED=1 \
			lane "e2e-$s" -v -- -timeout 35m ./test/e2e/
	fi
done
step "lanes"
.cache/bin/testreport -summary "$record"
