#!/usr/bin/env bash
# make demo / make demo-down: the Slurm lab, a control plane, slurm-fetchd
# and slurm-vk, all on this machine; then a first pod, streamed.
#   hack/demo/demo.sh up | down
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO_ROOT"
DEMO=$REPO_ROOT/.cache/demo
NODE=slurm-debug
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
. "$REPO_ROOT/hack/lib/pids.sh"
start() { # start NAME ARGS...
	local name=$1
	shift
	pid_start "$DEMO" "$name" "$REPO_ROOT/bin/$name" "$@"
}

up() {
	mkdir -p "$DEMO"
	say "Slurm lab (Debian trixie rootfs, Slurm 24.11, rootless podman, an image registry on 127.0.0.1:6850; the first time takes about a minute)"
	LAB_SUITE=trixie hack/lab/lab-up.sh
	. .cache/lab/trixie/lab.env
	say "Kubernetes control plane v1.37.2 (the first time builds it from Go modules: about 13 minutes)"
	hack/controlplane/up.sh
	. .cache/controlplane/env
	say "building slurm-vk and slurm-fetchd"
	go build -o bin/ ./cmd/slurm-vk ./cmd/slurm-fetchd
	root=$SLURM_LAB_SHARED/demo
	mkdir -p "$root"
	chown "$SLURM_LAB_UID:$SLURM_LAB_UID" "$root"
	[ -s "$DEMO/fetch-token" ] || (umask 077 && head -c 32 /dev/urandom | base64 >"$DEMO/fetch-token")
	say "starting slurm-fetchd (job output over HTTP) and slurm-vk (the virtual node)"
	start slurm-fetchd -listen 127.0.0.1:8090 -root "$root" -token-file "$DEMO/fetch-token" \
		-uid "$SLURM_LAB_UID" -gid "$SLURM_LAB_UID" -poll-interval 200ms
	start slurm-vk -kubeconfig "$CONTROLPLANE_PROVIDER_KUBECONFIG" -node-name "$NODE" -partition "$SLURM_LAB_PARTITION" \
		-slurmrestd-url "$SLURM_LAB_URL" -slurm-token-file "$SLURM_LAB_TOKEN_FILE" -slurm-user "$SLURM_LAB_USER" \
		-fetch-url http://127.0.0.1:8090 -fetch-token-file "$DEMO/fetch-token" -shared-root "$root" -runtime podman \
		-listen 127.0.0.1:10250 -node-ip 127.0.0.1 -tls-cert "$CONTROLPLANE_KUBELET_CERT" -tls-key "$CONTROLPLANE_KUBELET_KEY" \
		-client-ca "$CONTROLPLANE_CA" -status-interval 1s -metrics-listen 127.0.0.1:9090
	export KUBECONFIG
	for _ in $(seq 120); do
		[ "$(kubectl get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ] && break
		sleep 0.5
	done
	kubectl get node "$NODE" -o wide
	say "a first pod: kubectl apply -f hack/demo/hello.yaml"
	kubectl delete pod hello-slurm --ignore-not-found --wait=true >/dev/null
	kubectl apply -f hack/demo/hello.yaml
	kubectl wait --for=jsonpath='{.status.phase}'=Running pod/hello-slurm --timeout=120s >/dev/null ||
		kubectl wait --for=jsonpath='{.status.phase}'=Succeeded pod/hello-slurm --timeout=10s >/dev/null
	say "kubectl logs -f hello-slurm (streamed from the job's output file; ends with the job)"
	kubectl logs -f hello-slurm
	sleep 2
	kubectl get pod hello-slurm -o wide
	cat <<MSG

Everything is still running. Try:

  export KUBECONFIG=$KUBECONFIG
  kubectl get nodes -L slurm-vk.io/partition,slurm-vk.io/slurm-version
  kubectl describe pod hello-slurm
  kubectl logs hello-slurm --tail=2

Another image, with ENTRYPOINT, CMD and ENV of its own (args replace CMD, as on a kubelet):
  kubectl run app --image=$SLURM_LAB_REGISTRY/lab/app:1 --restart=Never --overrides='{"spec":{"nodeSelector":{"kubernetes.io/hostname":"$NODE"},"tolerations":[{"key":"virtual-kubelet.io/provider","operator":"Exists"}]}}' -- hello world
  kubectl logs app

A pod that waits in Slurm's queue: keep one CPU busy, then ask for all of them
(kubectl describe shows Slurm's reason, Resources, as the container's waiting reason):
  kubectl run busy --image=$SLURM_LAB_REGISTRY/lab/busybox:1 --restart=Never --overrides='{"spec":{"nodeSelector":{"kubernetes.io/hostname":"$NODE"},"tolerations":[{"key":"virtual-kubelet.io/provider","operator":"Exists"}],"containers":[{"name":"busy","image":"$SLURM_LAB_REGISTRY/lab/busybox:1","command":["sleep","60"]}]}}'
  kubectl run wide --image=$SLURM_LAB_REGISTRY/lab/busybox:1 --restart=Never --overrides='{"spec":{"nodeSelector":{"kubernetes.io/hostname":"$NODE"},"tolerations":[{"key":"virtual-kubelet.io/provider","operator":"Exists"}],"containers":[{"name":"wide","image":"$SLURM_LAB_REGISTRY/lab/busybox:1","command":["true"],"resources":{"requests":{"cpu":"$SLURM_LAB_CPUS"}}}]}}'
  kubectl describe pod wide

Logs: $DEMO/*.log   Metrics: curl -s localhost:9090/metrics | grep slurm_vk
Stop it all: make demo-down
MSG
}

down() {
	for name in slurm-vk slurm-fetchd; do
		pid_stop "$DEMO" "$name" 10
	done
	hack/controlplane/down.sh
	LAB_SUITE=trixie hack/lab/lab-down.sh
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
