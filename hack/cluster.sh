#!/usr/bin/env bash
# A real local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler) plus kwok simulating GPU nodes, all built from the Go module proxy.
#
#   hack/cluster.sh build    build the binaries once per version set (cached under $CACHE_DIR)
#   hack/cluster.sh up       start everything on 127.0.0.1, state under $WORK_DIR/cluster
#   hack/cluster.sh down     stop everything and remove the state
#   hack/cluster.sh restart-apiserver [DOWN_S]
#                            stop kube-apiserver, wait DOWN_S seconds, start it again
#   hack/cluster.sh compact-etcd
#                            compact etcd's history to its current revision: every watch that
#                            resumes from an older resourceVersion then gets 410 Gone
#   hack/cluster.sh status   say whether it is up
#   hack/cluster.sh env      print exports: eval "$(hack/cluster.sh env)" to use kubectl/helm
#   hack/cluster.sh bin-dir  print the directory holding the binaries
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/versions.env"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/triton-vllm-operator}"
WORK_DIR="${WORK_DIR:-$ROOT/.work}"

# Ports away from the usual ones (6443, 2379, 10257, 10259) so a host cluster does not clash.
APISERVER_PORT="${APISERVER_PORT:-16443}"
ETCD_CLIENT_PORT="${ETCD_CLIENT_PORT:-12379}"
ETCD_PEER_PORT="${ETCD_PEER_PORT:-12380}"
KCM_PORT="${KCM_PORT:-17257}"
SCHEDULER_PORT="${SCHEDULER_PORT:-17259}"
KWOK_PORT="${KWOK_PORT:-17270}"
# The HPA controller's sync period: kube-controller-manager's default is 15 s, and the
# autoscaling tests (tests/integration/test_keda_stack.py) would spend most of their time
# waiting for the next HPA pass; 5 s keeps them short. Each pass is one metrics read per HPA,
# cheap with the few HPAs a test cluster holds.
HPA_SYNC_PERIOD="${HPA_SYNC_PERIOD:-5s}"
SERVICE_CIDR="10.96.0.0/16"
POD_CIDR="10.244.0.0/16"
GPU_NODES="${GPU_NODES:-$ROOT/tests/gpu-nodes.yaml}"

# One cache directory per version set (and Go version: binaries embed the toolchain).
GO_VERSION="$(GOTOOLCHAIN=local go env GOVERSION)"
KEY="$(printf '%s\n' "$KUBERNETES_VERSION" "$ETCD_VERSION" "$KWOK_VERSION" "$HELM_VERSION" \
  "$GO_VERSION" "build-v1" | sha256sum | cut -c1-12)"
K8S_CACHE="$CACHE_DIR/k8s-$KEY"
BIN="$K8S_CACHE/bin"
STAGES="$K8S_CACHE/kwok-stages"
STATE="$WORK_DIR/cluster"
LOGS="$STATE/logs"
# Test hooks of the simulated kubelet (kwok), see cmd_up.
CONTAINER_LOGS="$STATE/container-logs"
HOLD_IMAGE="kwok.invalid/hold-running"
PKI="$STATE/pki"
KUBECONFIG_ADMIN="$STATE/kubeconfig"

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Go builds stay off HOME and out of the source tree, with the machine's toolchain only.
go_env() {
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
  export GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/build"
  export GOPATH="$CACHE_DIR/go/path"
}

# "vX.Y.Z" -> the staging modules' "v0.Y.Z".
staging_version() { echo "v0.${KUBERNETES_VERSION#v1.}"; }

build_kubernetes() {
  local dir="$K8S_CACHE/build/kubernetes" v="$KUBERNETES_VERSION" gomod sv major minor
  rm -rf "$dir" && mkdir -p "$dir"
  sv="$(staging_version)"
  major="${v#v}" && major="${major%%.*}"
  minor="${v#v*.}" && minor="${minor%%.*}"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local
  # paths that a dependent module cannot see: replace each with its published version.
  gomod="$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    echo "module local/kubernetes-build"
    echo
    echo "go $(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')"
    echo
    echo "require k8s.io/kubernetes $v"
    echo
    awk '/^require[ \t]*\(/ {r=1; next} r && /^\)/ {r=0} r && $1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' \
      "$gomod" | sort -u | while read -r m; do echo "replace $m => $m $sv"; done
  } >"$dir/go.mod"
  [ "$(grep -c '^replace' "$dir/go.mod")" -gt 20 ] || die "too few staging replaces from $gomod"
  local cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl) pkgs=() c
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # -tool keeps the requirements (a wrapper without imports would be emptied by tidy); pin the
  # version, since an unpinned go get upgrades.
  (cd "$dir" && go get -tool "${pkgs[@]/%/@$v}")
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for c in "${cmds[@]}"; do
    log "building $c $v"
    (cd "$dir" && go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$BIN/$c" \
      "k8s.io/kubernetes/cmd/$c")
  done
}

build_etcd() {
  local dir="$K8S_CACHE/build/etcd"
  rm -rf "$dir" && mkdir -p "$dir"
  printf 'module local/etcd-build\n\ngo %s\n' \
    "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" >"$dir/go.mod"
  (cd "$dir" && go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
  log "building etcd $ETCD_VERSION"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3)
}

build_kwok() {
  local moddir
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  # The node/pod lifecycle stages ship in the module, not in the binary: keep the whole
  # kustomize/stage tree, and pick the "fast" pod stages (no artificial delays) in cmd_up.
  moddir="$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  rm -rf "$STAGES" && cp -r "$moddir/kustomize/stage" "$STAGES" && chmod -R u+w "$STAGES"
}

build_helm() {
  local v="$HELM_VERSION" kmaj kmin
  kmaj="${KUBERNETES_VERSION#v}" && kmaj="${kmaj%%.*}"
  kmin="${KUBERNETES_VERSION#v*.}" && kmin="${kmin%%.*}"
  log "building helm $v"
  # helm's offline default (template, lint, Capabilities) is Kubernetes 1.20 unless set here.
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w \
    -X helm.sh/helm/v3/internal/version.version=$v \
    -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$kmaj \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$kmin" \
    "helm.sh/helm/v3/cmd/helm@$v"
}

cmd_build() {
  if [ -f "$K8S_CACHE/.complete" ]; then
    log "binaries cached in $BIN"
    return 0
  fi
  command -v go >/dev/null || die "go not found (need Go >= the version k8s.io/kubernetes asks for)"
  go_env
  mkdir -p "$BIN"
  local t0=$SECONDS
  log "cold build into $K8S_CACHE (8-15 minutes on 2 cores; later builds reuse it)"
  [ -x "$BIN/etcd" ] || build_etcd
  [ -x "$BIN/kwok" ] && [ -d "$STAGES" ] || build_kwok
  [ -x "$BIN/helm" ] || build_helm
  if ! [ -x "$BIN/kube-apiserver" ] || ! [ -x "$BIN/kubectl" ]; then build_kubernetes; fi
  # (grep reads it all: with -q it may exit first, and pipefail would see kubectl's SIGPIPE.)
  "$BIN/kubectl" version --client | grep "$KUBERNETES_VERSION" >/dev/null || die "kubectl reports no version"
  touch "$K8S_CACHE/.complete"
  log "built in $((SECONDS - t0)) s into $BIN"
}


# kubectl/helm write caches under HOME unless told otherwise.
tool_env() {
  export KUBECONFIG="$KUBECONFIG_ADMIN" PATH="$BIN:$PATH"
  export KUBECACHEDIR="$WORK_DIR/kube-cache"
  export HELM_CACHE_HOME="$WORK_DIR/helm/cache" HELM_CONFIG_HOME="$WORK_DIR/helm/config"
  export HELM_DATA_HOME="$WORK_DIR/helm/data"
}

# EC keys: much faster to generate than RSA, and every component accepts them.
new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$PKI/$1.key" 2>/dev/null; }

# sign NAME CA SUBJECT [SANS]: a client or serving certificate signed by CA.
sign() {
  local name=$1 ca=$2 subj=$3 sans=${4:-} ext="$PKI/$1.ext"
  new_key "$name"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$sans" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$sans"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } >"$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$ext"
}

new_ca() {
  new_key "$1"
  openssl req -x509 -new -key "$PKI/$1.key" -subj "/CN=$2" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -out "$PKI/$1.crt" 2>/dev/null
}

gen_pki() {
  mkdir -p "$PKI" && chmod 700 "$PKI"
  new_ca ca "triton-vllm-operator-ca"
  new_ca front-proxy-ca "triton-vllm-operator-front-proxy-ca"
  sign apiserver ca "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign admin ca "/O=system:masters/CN=kubernetes-admin"
  sign kube-controller-manager ca "/CN=system:kube-controller-manager"
  sign kube-scheduler ca "/CN=system:kube-scheduler"
  # kwok plays every kubelet (nodes, pods, leases): simplest to give it admin rights.
  sign kwok ca "/O=system:masters/CN=kwok"
  sign front-proxy-client front-proxy-ca "/CN=front-proxy-client"
  new_key sa
  openssl ec -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
}

# kubeconfig NAME USER: a self-contained kubeconfig (certificates embedded).
write_kubeconfig() {
  local out=$1 user=$2
  cat >"$out" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$user.crt")
    client-key-data: $(base64 -w0 <"$PKI/$user.key")
contexts:
- name: local
  context: {cluster: local, user: $user, namespace: default}
current-context: local
KC
  chmod 600 "$out"
}

# start NAME ARGS...: run in its own session, log to logs/NAME.log, pid in NAME.pid.
start() {
  local name=$1
  shift
  # 9>&-: the daemons must not inherit (and so hold forever) the lock taken by lock().
  setsid "$@" >"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  echo $! >"$STATE/$name.pid"
}

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

# wait_for WHAT TIMEOUT_S COMMAND...: poll until COMMAND succeeds; fail with the logs' tails.
wait_for() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    local c
    for c in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
      if [ -f "$STATE/$c.pid" ] && ! alive "$c"; then
        tail -20 "$LOGS/$c.log" >&2
        die "$c exited while waiting for $what (log: $LOGS/$c.log)"
      fi
    done
    if [ $SECONDS -ge $deadline ]; then
      die "timed out after ${timeout}s waiting for $what (logs: $LOGS)"
    fi
    sleep 0.2
  done
}

# Serialize up/down: test sessions started side by side would otherwise start two sets of
# daemons on the same state and ports.
lock() {
  mkdir -p "$WORK_DIR"
  exec 9>"$WORK_DIR/.cluster.lock"
  flock 9
}

COMPONENTS=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)

is_up() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  [ -f "$KUBECONFIG_ADMIN" ] &&
    KUBECONFIG="$KUBECONFIG_ADMIN" "$BIN/kubectl" --request-timeout=5s get --raw /readyz >/dev/null 2>&1
}

# The service CIDR is a config value only: nothing routes it. No endpoint reconciler, since
# no kube-proxy or node network stands behind the "kubernetes" Service.
# OwnerReferencesPermissionEnforcement (on top of the default admission plugins), as OpenShift
# runs it: an ownerReference with blockOwnerDeletion needs update on the owner's finalizers.
start_apiserver() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --cert-dir="$STATE/apiserver-certs" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --endpoint-reconciler-type=none \
    --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key"
}

cmd_up() {
  [ -f "$K8S_CACHE/.complete" ] || die "binaries not built: run hack/cluster.sh build first"
  tool_env
  if is_up; then
    log "already up: $KUBECONFIG_ADMIN"
    return 0
  fi
  [ -d "$STATE" ] && { log "removing stale state"; cmd_down; }
  local t0=$SECONDS
  # A failed start stops what it started but keeps the logs (the next up clears them).
  trap 'stop_all; log "up failed; logs in $LOGS"' EXIT
  mkdir -p "$LOGS" "$STATE/kcm" "$STATE/scheduler"
  mkdir -m 700 "$STATE/etcd"
  gen_pki
  write_kubeconfig "$KUBECONFIG_ADMIN" admin
  write_kubeconfig "$STATE/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$STATE/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$STATE/kwok.kubeconfig" kwok

  # A throwaway single-member etcd: no fsync, it holds nothing worth keeping.
  start etcd "$BIN/etcd" --name=default --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="default=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level=warn

  start_apiserver
  wait_for "kube-apiserver /readyz" 60 "$BIN/kubectl" --request-timeout=2s get --raw /readyz

  # Own kubeconfigs, localhost-only serving, no leader election (one replica, faster start).
  local k
  k="$STATE/kube-controller-manager.kubeconfig"
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$k" --authentication-kubeconfig="$k" --authorization-kubeconfig="$k" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/kcm" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --flex-volume-plugin-dir="$STATE/kcm/flexvolume" \
    --horizontal-pod-autoscaler-sync-period="$HPA_SYNC_PERIOD" \
    --kube-api-qps=200 --kube-api-burst=400
  k="$STATE/kube-scheduler.kubeconfig"
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$k" --authentication-kubeconfig="$k" --authorization-kubeconfig="$k" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$STATE/scheduler" \
    --leader-elect=false

  # kwok takes only nodes annotated kwok.x-k8s.io/node=fake; its default pod CIDR overlaps
  # the service range. It renews node leases only when told a lease duration (its default
  # applies to config files only): without leases, the 10-minute heartbeat stage lets the node
  # lifecycle controller mark every node NotReady after ~50 s.
  #
  # Two additions for tests of a Job whose pod runs a while (a download in progress):
  # - a pod whose only image is $HOLD_IMAGE stays Running (pod-complete skips it) until the test
  #   itself writes its end into the pod's status, as a kubelet would;
  # - container logs: kwok serves $CONTAINER_LOGS/<container>.log (CRI log format, written by
  #   the test) as the log of every container of that name, for the containers named below, on
  #   the nodes' kubelet port (--node-port), where the API server asks for pods/log.
  local stage
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    if [ "$stage" = pod/fast/pod-complete ]; then
      sed "/^    matchExpressions:/a\\
    - key: '.spec.containers.[].image'\\
      operator: 'NotIn'\\
      values:\\
      - '$HOLD_IMAGE'" "$STAGES/$stage.yaml"
    else
      cat "$STAGES/$stage.yaml"
    fi
    echo "---"
  done >"$STATE/kwok.yaml"
  mkdir -p "$CONTAINER_LOGS"
  local container
  for container in prefetch; do
    cat <<LOGS
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: $container
spec:
  logs:
  - containers: [$container]
    logsFile: $CONTAINER_LOGS/$container.log
    follow: false
---
LOGS
  done >>"$STATE/kwok.yaml"
  # Its own HOME: kwok would also load ~/.kwok/kwok.yaml.
  mkdir -p "$STATE/kwok-home"
  start kwok env HOME="$STATE/kwok-home" "$BIN/kwok" --kubeconfig="$STATE/kwok.kubeconfig" --config="$STATE/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr="$POD_CIDR" --node-ip=127.0.0.1 --server-address="127.0.0.1:$KWOK_PORT" \
    --node-port="$KWOK_PORT" \
    --node-lease-duration-seconds=40

  # Pods are refused until the default ServiceAccount exists.
  wait_for "the default ServiceAccount" 60 "$BIN/kubectl" get serviceaccount default -n default
  kubectl apply -f "$GPU_NODES" >/dev/null
  kubectl wait --for=condition=Ready -f "$GPU_NODES" --timeout=60s >/dev/null ||
    die "nodes not Ready (kwok log: $LOGS/kwok.log)"
  trap - EXIT
  log "up in $((SECONDS - t0)) s: eval \"\$(hack/cluster.sh env)\"; kubectl get nodes"
}

stop_all() {
  # TERM everything at once (the state is thrown away, so order does not matter), then KILL
  # what is still there after 5 s.
  local c pids=() _
  for c in "${COMPONENTS[@]}"; do
    alive "$c" && pids+=("$(cat "$STATE/$c.pid")")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "${pids[@]}" 2>/dev/null || break
    sleep 0.1
  done
  for c in "${pids[@]}"; do kill -KILL "$c" 2>/dev/null || true; done
}

cmd_down() {
  stop_all
  rm -rf "$STATE"
  log "down"
}

# Stop kube-apiserver (TERM, then KILL after 30 s), leave it down DOWN_S seconds, start it
# again with the same flags and state; the other components reconnect on their own.
cmd_restart_apiserver() {
  local down_s=${1:-0} pid _
  alive kube-apiserver || die "kube-apiserver is not running (hack/cluster.sh up)"
  tool_env
  pid="$(cat "$STATE/kube-apiserver.pid")"
  kill -TERM "$pid"
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  sleep "$down_s"
  mv -f "$LOGS/kube-apiserver.log" "$LOGS/kube-apiserver.log.prev"
  start_apiserver
  wait_for "kube-apiserver /readyz" 60 "$BIN/kubectl" --request-timeout=2s get --raw /readyz
  log "kube-apiserver restarted (pid $(cat "$STATE/kube-apiserver.pid"))"
}

cmd_compact_etcd() {
  local url="http://127.0.0.1:$ETCD_CLIENT_PORT" rev
  # etcd's JSON gateway: the current revision, then a physical compaction to it.
  rev="$(curl -sf -X POST "$url/v3/maintenance/status" -d '{}' |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["header"]["revision"])')"
  curl -sf -X POST "$url/v3/kv/compaction" -d "{\"revision\": \"$rev\", \"physical\": true}" >/dev/null
  log "etcd compacted to revision $rev"
}

cmd_env() {
  tool_env
  local v
  for v in KUBECONFIG KUBECACHEDIR HELM_CACHE_HOME HELM_CONFIG_HOME HELM_DATA_HOME; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  # shellcheck disable=SC2016 # $PATH is for the shell that evals this
  printf 'export PATH=%q:"$PATH"\n' "$BIN"
}

cmd_status() {
  is_up || { echo "down"; return 1; }
  echo "up: $KUBECONFIG_ADMIN"
  local c total=0 rss
  for c in "${COMPONENTS[@]}"; do
    rss="$(awk '/^VmRSS/ {print int($2 / 1024)}' "/proc/$(cat "$STATE/$c.pid")/status")"
    total=$((total + rss))
    printf '  %-24s pid %-8s %5s MiB\n' "$c" "$(cat "$STATE/$c.pid")" "$rss"
  done
  printf '  %-37s %5s MiB\n' "total RSS" "$total"
}

case "${1:-}" in
build) cmd_build ;;
up) lock && cmd_up ;;
down) lock && cmd_down ;;
restart-apiserver) lock && cmd_restart_apiserver "${2:-0}" ;;
compact-etcd) cmd_compact_etcd ;;
status) cmd_status ;;
env) cmd_env ;;
bin-dir) echo "$BIN" ;;
*)
  awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"
  exit 2
  ;;
esac
