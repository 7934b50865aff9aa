#!/usr/bin/env bash
# Restart lab daemons (fault-injection tests): lab-restart.sh slurmctld
# slurmrestd ... stops each by its recorded PID, then lab-up starts what is
# missing and waits until the cluster answers again.
. "$(dirname "$0")/common.sh"
need_root
for d in "$@"; do
	case $d in
	slurmctld | slurmrestd) pid_stop "$STATE" "$d" 30 ;;
	slurmd) for n in c1 c2; do pid_stop "$STATE" "slurmd-$n" 30; done ;;
	*)
		log "lab-restart: $d is not a daemon this script restarts (slurmctld, slurmd, slurmrestd)"
		exit 2
		;;
	esac
done
exec "$(dirname "$0")/lab-up.sh"
