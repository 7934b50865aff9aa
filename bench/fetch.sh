#!/usr/bin/env bash
# The fetch endpoint's benchmarks, each against its baseline in the same run,
# on the real slurm-fetchd binary and real files (no lab needed):
#   - 1 GiB finished output through the client vs `cat` of the same file
#   - 1 GiB of 80-byte lines read with --timestamps vs without
#   - a job writing 1 GiB with slurm-vk-logtime sampling beside it vs alone
#   - follow latency: a line every 10 ms for FOLLOW_SECONDS (default 60), without and with --timestamps
#   - 1,000 idle follow streams: memory and CPU of endpoint and client
#   - PODS (default 20,000) pod directories against 200: a janitor sweep, and
#     the per-pod read the provider makes (latency, endpoint memory)
# Needs about 2 GiB free in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -run '^$' -bench 'BenchmarkRead1GiB|BenchmarkReadTimestamps1GiB' -benchtime 3x -count "${COUNT:-3}" -timeout 30m ./fetch/client/
go test -run '^$' -bench 'BenchmarkJobWrite1GiB' -benchtime 6x -count "${COUNT:-3}" -timeout 30m ./fetch/logtime/
go test -run '^$' -bench 'BenchmarkFollowLatency|BenchmarkIdleFollows1000' -benchtime 1x -timeout 30m ./fetch/client/
go test -run '^$' -bench 'BenchmarkSweep' -benchtime 5x -timeout 30m ./fetch/server/
go test -run '^$' -bench 'BenchmarkPodDirs20000' -benchtime 500x -timeout 30m ./fetch/client/
