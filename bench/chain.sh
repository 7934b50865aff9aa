#!/usr/bin/env bash
# Pods through the whole chain (API server, scheduler, slurm-vk,
# slurm-fetchd, slurmrestd, Slurm) against the same number of jobs submitted
# straight to slurmrestd, and the same number of pods created in the API
# server alone (bound to a node nothing serves), interleaved in the same
# run: time to all submitted, time to all finished, medians of RUNS,
# chain/raw ratios, each process's share of the CPU while submitting; every
# pod must have exactly one job.
#   make lab-up [LAB_SUITE=sid]; make controlplane-up; bench/chain.sh [trixie|sid]
#   PODS (default 1000), RUNS (default 3), WORKERS (slurm-vk's
#   -pod-sync-workers; default its own)
set -euo pipefail
cd "$(dirname "$0")/.."
CONTROLPLANE_ENV=$PWD/.cache/controlplane/env SLURM_LAB_ENV=$PWD/.cache/lab/${1:-trixie}/lab.env \
	SLURM_VK_BENCH_PODS=${PODS:-1000} SLURM_VK_BENCH_RUNS=${RUNS:-3} SLURM_VK_BENCH_WORKERS=${WORKERS:-} \
	go test -count=1 -run '^TestE2EThroughput$' -v -timeout 180m ./test/e2e/ | grep 'throughput_test.go'
