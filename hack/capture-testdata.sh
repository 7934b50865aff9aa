#!/usr/bin/env bash
# Capture real slurmrestd answers from a running lab as golden files for the
# slurmclient unit tests: slurmclient/testdata/<version>/<case>.<status>.json.
#
#   hack/capture-testdata.sh .cache/lab/trixie/lab.env v0.0.42
#   hack/capture-testdata.sh .cache/lab/sid/lab.env v0.0.45
#
# Job IDs, times and host names in the files are whatever the lab had.
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=$1 version=$2
. "$env_file"
out=slurmclient/testdata/$version
rm -rf "$out"
mkdir -p "$out"
token=$(cat "$SLURM_LAB_TOKEN_FILE")
base=$SLURM_LAB_URL/slurm/$version
dir=$SLURM_LAB_SHARED/capture
mkdir -p "$dir"
chown "$SLURM_LAB_UID:$SLURM_LAB_UID" "$dir"

# req CASE METHOD PATH [BODY] [TOKEN]: save the answer as CASE.<status>.json
req() {
	local name=$1 method=$2 path=$3 body=${4:-} tok=${5-$token} tmp status
	tmp=$(mktemp)
	status=$(curl -s -o "$tmp" -w '%{http_code}' -X "$method" \
		-H "X-SLURM-USER-NAME: $SLURM_LAB_USER" -H "X-SLURM-USER-TOKEN: $tok" \
		${body:+-H 'Content-Type: application/json' --data-binary "$body"} "$base$path")
	mv "$tmp" "$out/$name.$status.json"
	chmod 0644 "$out/$name.$status.json"
	echo "$out/$name.$status.json"
}
job_id() { sed -n 's/^ *"job_id": *\([0-9]*\).*/\1/p' "$1" | head -n1; }
wait_done() {
	for _ in $(seq 100); do
		curl -s -H "X-SLURM-USER-NAME: $SLURM_LAB_USER" -H "X-SLURM-USER-TOKEN: $token" "$base/job/$1" |
			grep -Eq '"(COMPLETED|FAILED|CANCELLED|TIMEOUT)"' && return
		sleep 0.2
	done
	echo "job $1 did not finish" >&2
	exit 1
}
spec() { # spec SCRIPT [EXTRA_JSON_FIELDS]
	printf '{"job":{"script":"#!/bin/sh\\n%s\\n","name":"capture","comment":"capture-%s","current_working_directory":"%s","environment":["PATH=/usr/bin:/bin"],"standard_output":"%s/%%j.out"%s}}' \
		"$1" "$RANDOM" "$dir" "$dir" "${2:-}"
}

req ping GET /ping/ >/dev/null
req diag GET /diag/ >/dev/null
req diag-bad-token GET /diag/ "" not-a-token >/dev/null
req diag-no-token GET /diag/ "" "" >/dev/null
ok=$(req submit-ok POST /job/submit "$(spec 'echo hello; exit 3')")
ok_id=$(job_id "$ok")
held=$(req submit-held POST /job/submit "$(spec 'sleep 1' ',"hold":true')")
held_id=$(job_id "$held")
run=$(req submit-running POST /job/submit "$(spec 'sleep 30')")
run_id=$(job_id "$run")
# Needs every CPU of the node while the job above holds one: pending, Resources.
big=$(req submit-whole-node POST /job/submit "$(spec 'sleep 1' ",\"cpus_per_task\":$SLURM_LAB_CPUS")")
big_id=$(job_id "$big")
req submit-too-many-cpus POST /job/submit "$(spec true ",\"cpus_per_task\":$((SLURM_LAB_CPUS * 4))")" >/dev/null
req submit-bad-partition POST /job/submit "$(spec true ',"partition":"nope"')" >/dev/null
req submit-impossible-memory POST /job/submit "$(spec true ',"memory_per_node":{"set":true,"number":99999999}')" >/dev/null
req submit-malformed POST /job/submit '{"job":{"script":' >/dev/null
wait_done "$ok_id"
sleep 1
req job-completed GET "/job/$ok_id" >/dev/null
req job-held GET "/job/$held_id" >/dev/null
req job-pending-resources GET "/job/$big_id" >/dev/null
req job-running GET "/job/$run_id" >/dev/null
req job-unknown GET /job/999999 >/dev/null
req jobs-state GET "/jobs/state/?job_id=$ok_id&job_id=$held_id&job_id=$run_id&job_id=999999" >/dev/null
req jobs GET /jobs/ >/dev/null
req cancel-running DELETE "/job/$run_id?signal=SIGTERM" >/dev/null
req cancel-unknown DELETE /job/999999 >/dev/null
for id in "$held_id" "$big_id"; do
	curl -s -o /dev/null -X DELETE -H "X-SLURM-USER-NAME: $SLURM_LAB_USER" -H "X-SLURM-USER-TOKEN: $token" "$base/job/$id"
done
req nodes GET /nodes/ >/dev/null
req partitions GET /partitions/ >/dev/null
ls "$out"
