#!/usr/bin/env bash
# Container start overhead per runtime on the lab: the time from a
# container's launch in the job to its first output line, runtime none as
# the baseline, RUNS (default 15) interleaved runs each, medians and ratios.
#   make lab-up [LAB_SUITE=sid]; bench/containers.sh [trixie|sid]
set -euo pipefail
cd "$(dirname "$0")/.."
SLURM_LAB_ENV=$PWD/.cache/lab/${1:-trixie}/lab.env SLURM_VK_BENCH_RUNS=${RUNS:-15} \
	go test -count=1 -run '^TestLabContainerStartOverhead$' -v -timeout 30m ./provider/ | grep -v '^=== RUN\|^--- PASS\|^PASS\|^ok'
