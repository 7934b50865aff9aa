#!/usr/bin/env bash
# The provider's status cycle with SYNC_JOBS (default 2,000 and 20,000) held jobs on the
# lab: slurmrestd requests per steady cycle, cycle time, memory.
#   make lab-up [LAB_SUITE=sid]; bench/provider.sh [trixie|sid]
set -euo pipefail
cd "$(dirname "$0")/.."
SLURM_LAB_ENV=$PWD/.cache/lab/${1:-trixie}/lab.env go test -run '^$' -bench '^BenchmarkLabSync$' \
	-benchtime "${BENCHTIME:-10x}" -timeout 30m ./provider/
