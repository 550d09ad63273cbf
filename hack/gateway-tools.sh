#!/usr/bin/env bash
# The Gateway API Inference Extension's InferencePool CRDs and its lightweight endpoint picker
# (cmd/lwepp, an Envoy ext_proc server), from the Go module proxy into a cache keyed by version,
# for the endpoint-picker test; prints the directory.
#
#   hack/gateway-tools.sh          build (once per version) and print the directory
#   hack/gateway-tools.sh dir      print the directory without building
#
# The directory holds bin/lwepp, crds/ (config/crd/bases as the module ships them) and module
# (a link to the module's source, whose protos the test reads).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/versions.env"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/triton-vllm-operator}"

GO_VERSION="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
KEY="$(printf '%s\n' "$GIE_VERSION" "$GO_VERSION" "gateway-v1" | sha256sum | cut -c1-12)"
TOOLS="$CACHE_DIR/gateway-$KEY"
BIN="$TOOLS/bin"
MODULE=sigs.k8s.io/gateway-api-inference-extension

log() { printf '[gateway-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

go_env() {
  command -v go >/dev/null || die "go not found"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
  export GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/build" GOPATH="$CACHE_DIR/go/path"
}

cmd_build() {
  if [ -f "$TOOLS/.complete" ]; then
    echo "$TOOLS"
    return 0
  fi
  go_env
  mkdir -p "$BIN"
  local t0=$SECONDS dir
  log "cold build into $TOOLS (lwepp: several minutes on 2 cores; cached after)"
  dir="$(go mod download -json "$MODULE@$GIE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  # Build inside a wrapper module, as a dependency: its go.sum then pins what the proxy serves.
  local build="$TOOLS/build"
  rm -rf "$build" && mkdir -p "$build"
  printf 'module local/gateway-build\n\ngo %s\n' \
    "$(go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/')" >"$build/go.mod"
  (cd "$build" && go get -tool "$MODULE/cmd/lwepp@$GIE_VERSION")
  (cd "$build" && go build -trimpath -ldflags "-s -w" -o "$BIN/lwepp" "$MODULE/cmd/lwepp")
  rm -rf "$TOOLS/crds" && mkdir -p "$TOOLS/crds"
  cp "$dir"/config/crd/bases/*.yaml "$TOOLS/crds/"
  chmod -R u+w "$TOOLS/crds"
  ln -sfn "$dir" "$TOOLS/module"
  rm -rf "$build"
  touch "$TOOLS/.complete"
  log "built in $((SECONDS - t0)) s"
  echo "$TOOLS"
}

case "${1:-build}" in
  build) cmd_build ;;
  dir) echo "$TOOLS" ;;
  *) die "usage: $0 [build|dir]" ;;
esac
