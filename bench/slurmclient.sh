#!/usr/bin/env bash
# slurmclient against plain net/http on the same slurmrestd, same run:
# submit, JobStates of 1,000 jobs, and Job. Needs a lab:
#   make lab-up [LAB_SUITE=sid]; bench/slurmclient.sh [trixie|sid]
set -euo pipefail
cd "$(dirname "$0")/.."
suite=${1:-trixie}
out=$(mktemp)
SLURM_LAB_ENV=$PWD/.cache/lab/$suite/lab.env go test -run '^$' -bench 'BenchmarkLab' \
	-benchtime "${BENCHTIME:-200x}" -count "${COUNT:-5}" ./slurmclient/ | tee "$out"
echo
echo "medians over ${COUNT:-5} runs, lab $suite:"
awk -f bench/ratios.awk "$out"
rm -f "$out"
