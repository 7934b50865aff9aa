#!/usr/bin/env bash
# make conformance: the upstream e2e specs of test/conformance/specs.yaml
# (all of them) against a Slurm virtual node. Builds the suite and its
# images, brings up the lab (LAB_SUITE, default sid: its busybox, 1.38,
# of which the suite's busybox image is made, passes environment names
# that are not shell names on to what sh starts, as the suite's own image
# does; trixie's 1.37 drops them) and the control
# plane if they are not up (and stops what it started), runs
# TestE2EConformance with SLURM_VK_CONFORMANCE=all and prints the table
# (spec, result, seconds, reason), also written with the suite's JUnit to
# .cache/conformance/report. SLURM_VK_CONFORMANCE_FOCUS=regexp narrows it.
set -euo pipefail
cd "$(dirname "$0")/../.."
LAB_SUITE=${LAB_SUITE:-sid}
env_file=.cache/lab/$LAB_SUITE/lab.env
lab_started= controlplane_started=
cleanup() {
	[ -z "$controlplane_started" ] || hack/controlplane/down.sh || true
	[ -z "$lab_started" ] || LAB_SUITE=$LAB_SUITE hack/lab/lab-down.sh || true
}
trap cleanup EXIT
hack/conformance/build.sh >/dev/null
if ! { [ -f "$env_file" ] && LAB_SUITE=$LAB_SUITE bash -c '. hack/lab/common.sh; pid_alive slurmrestd'; }; then
	lab_started=1
fi
LAB_SUITE=$LAB_SUITE hack/lab/lab-up.sh
[ -s .cache/controlplane/env ] || controlplane_started=1
hack/controlplane/up.sh
status=0
CONTROLPLANE_ENV=$PWD/.cache/controlplane/env SLURM_LAB_ENV=$PWD/$env_file SLURM_LAB_REQUIRED=1 SLURM_E2E_REQUIRED=1 \
	SLURM_VK_CONFORMANCE=all go test -count=1 -timeout 6h -run '^TestE2EConformance$' -v ./test/e2e/ |
	grep -v '^        [{]' || status=$?
echo "the table: .cache/conformance/report/table.md; the suite's log: .cache/conformance/report/e2e.log"
exit "$status"
