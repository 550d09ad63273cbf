#!/usr/bin/env bash
# Run a real tritonserver (from the serving environment) with the bundled tritonvllm backend.
#
#   hack/run-tritonserver.sh MODEL_REPO [extra tritonserver args...]
#
# Lays out a backend directory under $WORK_DIR (python/ from the serving environment, tritonvllm/
# from this repository's backend/), sets the environment the python backend stub needs, and execs
# tritonserver listening on 127.0.0.1. Ports: TRITON_HTTP_PORT (8000), TRITON_GRPC_PORT (8001),
# TRITON_METRICS_PORT (8002). Builds the serving environment first if it is missing;
# SERVING_ENV names another one of the same layout (hack/gpu-env.sh's, for GPUs).
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 MODEL_REPO [extra tritonserver args...]" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../versions.env
source "$ROOT/versions.env"
export CACHE_DIR="${CACHE_DIR:-$HOME/.cache/triton-vllm-operator}"
WORK_DIR="${WORK_DIR:-$ROOT/.work}"
MODEL_REPO="$(cd "$1" && pwd)"
shift

SERVING="${SERVING_ENV:-$("$ROOT/hack/serving-env.sh" --print)}"

# The backend directory is keyed by the content of the backend, so servers running side by side
# share it and never see a half-copied one (built in a temporary directory, renamed into place).
SOURCES="$(cd "$ROOT/backend/tritonvllm" && find . -name '*.py' -not -path '*/__pycache__/*' | sort)"
HASH="$( (echo "$SERVING"; cd "$ROOT/backend/tritonvllm" && echo "$SOURCES" | xargs cat) \
  | sha256sum | cut -c1-12)"
BACKENDS="$WORK_DIR/backends/$HASH"
if [[ ! -d "$BACKENDS" ]]; then
  mkdir -p "$WORK_DIR/backends"
  TMP="$(mktemp -d "$WORK_DIR/backends/.tmp-XXXXXX")"
  cp -r "$SERVING/backends/python" "$TMP/python"
  mkdir -p "$TMP/tritonvllm"
  (cd "$ROOT/backend/tritonvllm" && echo "$SOURCES" | xargs cp --parents -t "$TMP/tritonvllm")
  mv -T "$TMP" "$BACKENDS" 2>/dev/null || rm -rf "$TMP"
fi

# The stub finds site-packages through the first python3 on PATH; it links libpython3.11.so.
export PATH="$SERVING/venv/bin:$PATH"
LIBPATHS="$(paste -sd: "$SERVING/libpaths")"
export LD_LIBRARY_PATH="$LIBPATHS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
export PYTHONIOENCODING=utf-8

exec "$SERVING/bin/tritonserver" \
  --backend-directory="$BACKENDS" \
  --model-repository="$MODEL_REPO" \
  --http-address=127.0.0.1 --http-port="${TRITON_HTTP_PORT:-8000}" \
  --grpc-address=127.0.0.1 --grpc-port="${TRITON_GRPC_PORT:-8001}" \
  --metrics-address=127.0.0.1 --metrics-port="${TRITON_METRICS_PORT:-8002}" \
  "$@"
