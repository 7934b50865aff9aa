#!/usr/bin/env bash
# Start a real control plane on loopback: etcd, kube-apiserver (x509 client
# auth, Node+RBAC authorization, verifying kubelet serving certificates),
# kube-controller-manager and kube-scheduler. PIDs are recorded for down.sh;
# .cache/controlplane/env holds KUBECONFIG (admin) and the provider's files.
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CP=${CONTROLPLANE_CACHE:-$REPO_ROOT/.cache/controlplane}
RUN=$CP/run
PKI=$CP/pki
mkdir -p "$RUN" "$PKI"
BIN=$("$REPO_ROOT/hack/controlplane/build.sh")
(cd "$REPO_ROOT" && go run ./hack/controlplane/pki -dir "$PKI" -node "${NODE_NAME:-slurm-debug}")

. "$REPO_ROOT/hack/lib/pids.sh"
start() { # start NAME ARGS...
	local name=$1
	shift
	pid_start "$RUN" "$name" "$BIN/$name" "$@"
}
wait_for() {
	for _ in $(seq 240); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.5
	done
	echo "controlplane: timed out: $*" >&2
	tail -n 30 "$RUN"/*.log >&2
	return 1
}

started=$(date +%s)
start etcd --name e2e --data-dir "$RUN/etcd" \
	--listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
	--listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
	--initial-cluster e2e=http://127.0.0.1:12380 --log-level warn
start kube-apiserver --etcd-servers http://127.0.0.1:12379 \
	--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port 6443 \
	--tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
	--client-ca-file "$PKI/ca.crt" \
	--service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
	--service-account-issuer https://kubernetes.default.svc.cluster.local \
	--service-cluster-ip-range 10.0.0.0/24 \
	--authorization-mode Node,RBAC \
	--kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
	--kubelet-certificate-authority "$PKI/ca.crt" --kubelet-preferred-address-types InternalIP \
	--endpoint-reconciler-type none
export KUBECONFIG=$PKI/admin.kubeconfig
wait_for kubectl get --raw /readyz
start kube-controller-manager --kubeconfig "$PKI/kube-controller-manager.kubeconfig" \
	--authentication-kubeconfig "$PKI/kube-controller-manager.kubeconfig" \
	--authorization-kubeconfig "$PKI/kube-controller-manager.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port 10257 --leader-elect=false \
	--service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
	--use-service-account-credentials
start kube-scheduler --kubeconfig "$PKI/kube-scheduler.kubeconfig" \
	--authentication-kubeconfig "$PKI/kube-scheduler.kubeconfig" \
	--authorization-kubeconfig "$PKI/kube-scheduler.kubeconfig" \
	--bind-address 127.0.0.1 --secure-port 10259 --leader-elect=false
wait_for kubectl apply -f "$REPO_ROOT/test/e2e/manifests/provider-rbac.yaml"
wait_for kubectl get serviceaccount default -n default
cat >"$CP/env" <<ENV
KUBECONFIG=$PKI/admin.kubeconfig
CONTROLPLANE_PROVIDER_KUBECONFIG=$PKI/provider.kubeconfig
CONTROLPLANE_KUBELET_CERT=$PKI/kubelet-serving.crt
CONTROLPLANE_KUBELET_KEY=$PKI/kubelet-serving.key
CONTROLPLANE_CA=$PKI/ca.crt
ENV
echo "controlplane: up in $(($(date +%s) - started))s; export KUBECONFIG=$PKI/admin.kubeconfig" >&2
