#!/usr/bin/env bash
# kubectl exec into a running job (API server, kubelet API, slurm-vk,
# slurm-fetchd, the job's agent) against kubectl get of the same pod, N
# round trips each (default 50), alternately: medians, p99, the ratio.
#   make lab-up [LAB_SUITE=sid]; make controlplane-up; bench/exec.sh [trixie|sid]
set -euo pipefail
cd "$(dirname "$0")/.."
CONTROLPLANE_ENV=$PWD/.cache/controlplane/env SLURM_LAB_ENV=$PWD/.cache/lab/${1:-trixie}/lab.env \
	SLURM_VK_BENCH_EXEC=${N:-50} go test -count=1 -run '^TestE2EExec$' -v -timeout 30m ./test/e2e/ | grep 'exec_test.go'
