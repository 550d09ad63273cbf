#!/usr/bin/env bash
# make demo: the product end to end on one machine, from nothing.
#
#  1. the local control plane with simulated GPU nodes (hack/cluster.sh up);
#  2. the chart installed (CRD, RBAC, ServiceAccount), the operator run against the cluster;
#  3. examples/tiny-llama-cpu.yaml applied, watched until Ready with its resolved TP;
#  4. the ConfigMap the operator rendered is laid out as the pod would mount it, and a real
#     tritonserver with the bundled backend and vLLM (CPU) serves a generate request from it,
#     and a chat completion from the same engine on vLLM's OpenAI port.
#
#   hack/demo.sh        run it (make demo)
#   hack/demo.sh down   stop the processes it started and the control plane (make demo-down)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK_DIR="${WORK_DIR:-$ROOT/.work}"
DEMO_DIR="$WORK_DIR/demo"
NAMESPACE=demo
MODEL=tiny-llama
RELEASE=triton-vllm-operator
OPERATOR_NS=triton-vllm-system
HTTP_PORT="${DEMO_HTTP_PORT:-18000}"
OPENAI_PORT=$((HTTP_PORT + 3))
PY="$ROOT/.venv/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

stop_pid() {
  local file="$DEMO_DIR/$1.pid"
  if [[ -f "$file" ]]; then
    kill "$(cat "$file")" 2>/dev/null || true
    rm -f "$file"
  fi
}

if [[ "${1:-}" == "down" ]]; then
  stop_pid tritonserver
  stop_pid operator
  hack/cluster.sh down
  rm -rf "$DEMO_DIR"
  exit 0
fi

mkdir -p "$DEMO_DIR"
trap 'stop_pid tritonserver; stop_pid operator' EXIT

say "Starting the local control plane (etcd, kube-apiserver, scheduler, controller-manager, kwok GPU nodes)"
hack/cluster.sh up >"$DEMO_DIR/cluster-up.log" 2>&1 || { cat "$DEMO_DIR/cluster-up.log"; exit 1; }
eval "$(hack/cluster.sh env)"
kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count

say "Installing the chart (CRD, RBAC, operator Deployment) with helm"
# A CRD kept from an earlier release (the chart's keep policy) is adopted by this one, as the
# chart's README describes.
if kubectl get crd tritonvllmmodels.tritonvllm.io >/dev/null 2>&1; then
  kubectl label crd tritonvllmmodels.tritonvllm.io app.kubernetes.io/managed-by=Helm --overwrite >/dev/null
  kubectl annotate crd tritonvllmmodels.tritonvllm.io --overwrite >/dev/null \
    meta.helm.sh/release-name="$RELEASE" meta.helm.sh/release-namespace="$OPERATOR_NS"
fi
helm upgrade --install "$RELEASE" charts/triton-vllm-operator --namespace "$OPERATOR_NS" \
  --create-namespace --wait=false >"$DEMO_DIR/helm.log"
kubectl wait --for=condition=Established crd/tritonvllmmodels.tritonvllm.io --timeout=60s >/dev/null

# The chart's operator pod lands on a simulated node, where nothing really runs: run the same
# operator here, against the same API server.
say "Running the operator (logs: $DEMO_DIR/operator.log)"
TRITON_VLLM_LIVENESS_ENDPOINT="http://127.0.0.1:18080/healthz" \
  "$PY" -m triton_vllm_operator run >"$DEMO_DIR/operator.log" 2>&1 &
echo $! >"$DEMO_DIR/operator.pid"

say "Applying examples/$MODEL-cpu.yaml"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NAMESPACE" apply -f "examples/$MODEL-cpu.yaml"
kubectl -n "$NAMESPACE" wait --for=condition=Ready "tvm/$MODEL" --timeout=180s
kubectl -n "$NAMESPACE" get tvm "$MODEL"
TP="$(kubectl -n "$NAMESPACE" get tvm "$MODEL" -o jsonpath='{.status.tensorParallelSize}')"
CONFIG_MAP="$(kubectl -n "$NAMESPACE" get tvm "$MODEL" -o jsonpath='{.status.configMap}')"
NODE="$(kubectl -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$MODEL" -o jsonpath='{.items[0].spec.nodeName}')"

say "Laying out the rendered ConfigMap as the pod mounts it, with a tiny generated model"
REPO="$DEMO_DIR/models"
CACHE="$DEMO_DIR/cache"
rm -rf "$REPO" && mkdir -p "$REPO/$MODEL/1" "$CACHE/models"
# As in the pod, but on this machine's loopback and a free port: the pod's OpenAI port (the
# Service's `openai`) listens on all its addresses.
kubectl -n "$NAMESPACE" get configmap "$CONFIG_MAP" -o jsonpath='{.data.config\.pbtxt}' \
  | "$PY" -c '
import sys
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
config = text_format.Parse(sys.stdin.read(), mc.ModelConfig())
config.parameters["OPENAI_API_PORT"].string_value = sys.argv[1]
config.parameters["OPENAI_API_HOST"].string_value = "127.0.0.1"
print(text_format.MessageToString(config), end="")
' "$OPENAI_PORT" >"$REPO/$MODEL/config.pbtxt"
# The pod mounts its cache volume at /cache; here that volume is $CACHE.
kubectl -n "$NAMESPACE" get configmap "$CONFIG_MAP" -o jsonpath='{.data.model\.json}' \
  | sed "s#\"/cache/#\"$CACHE/#" >"$REPO/$MODEL/1/model.json"
SERVING="$(hack/serving-env.sh --print)"
# Made again whenever hack/tiny_model.py changes (e.g. its chat template).
STAMP="$(sha256sum hack/tiny_model.py | cut -c1-12)"
if [[ "$(cat "$CACHE/models/$MODEL/.made-by" 2>/dev/null)" != "$STAMP" ]]; then
  rm -rf "$CACHE/models/$MODEL"
  "$SERVING/venv/bin/python" hack/tiny_model.py "$CACHE/models/$MODEL" >/dev/null 2>&1
  echo "$STAMP" >"$CACHE/models/$MODEL/.made-by"
fi

say "Starting tritonserver with the bundled backend and vLLM on CPU (logs: $DEMO_DIR/tritonserver.log)"
START=$(date +%s)
TRITON_HTTP_PORT="$HTTP_PORT" TRITON_GRPC_PORT=$((HTTP_PORT + 1)) TRITON_METRICS_PORT=$((HTTP_PORT + 2)) \
  hack/run-tritonserver.sh "$REPO" >"$DEMO_DIR/tritonserver.log" 2>&1 &
echo $! >"$DEMO_DIR/tritonserver.pid"
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null && break
  kill -0 "$(cat "$DEMO_DIR/tritonserver.pid")" 2>/dev/null || { tail -30 "$DEMO_DIR/tritonserver.log"; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null || { tail -30 "$DEMO_DIR/tritonserver.log"; exit 1; }
LOADED=$(( $(date +%s) - START ))

PROMPT="The capital of France is"
REPLY="$(curl -sf -X POST "http://127.0.0.1:$HTTP_PORT/v2/models/$MODEL/generate" \
  -d "{\"text_input\": \"$PROMPT\", \"sampling_parameters\": \"{\\\"max_tokens\\\": 12, \\\"temperature\\\": 0}\", \"exclude_input_in_output\": true, \"return_num_output_tokens\": true}")"
TEXT="$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["text_output"])' "$REPLY")"

CHAT_BODY="{\"model\": \"$MODEL\", \"messages\": [{\"role\": \"user\", \"content\": \"$PROMPT\"}], \"max_tokens\": 12}"
CHAT="$(curl -s "http://127.0.0.1:$OPENAI_PORT/v1/chat/completions" -H 'Content-Type: application/json' -d "$CHAT_BODY")"
ANSWER="$("$PY" -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["choices"][0]["message"]["content"], "|", r["usage"]["completion_tokens"], "tokens")' "$CHAT")" \
  || { echo "chat completion failed: $CHAT"; exit 1; }

say "What happened"
cat <<EOF
  TritonVLLMModel $NAMESPACE/$MODEL is Ready: tensorParallelSize=$TP, its pod on simulated GPU node $NODE.
  The operator rendered config.pbtxt + model.json into immutable ConfigMap $CONFIG_MAP.
  A real tritonserver loaded that config with the bundled backend and vLLM (CPU) in ${LOADED}s.
  POST /v2/models/$MODEL/generate  "$PROMPT" ->$TEXT
  The same engine speaks the OpenAI API (in the cluster: the Service's port openai, 9000):
    curl -s localhost:$OPENAI_PORT/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '$CHAT_BODY'
    -> $ANSWER
  (random weights, word-level tokenizer: the words are real, the sense is not)
  Explore:  eval "\$(hack/cluster.sh env)"; kubectl -n $NAMESPACE describe tvm $MODEL
  Clean up: make demo-down
EOF
