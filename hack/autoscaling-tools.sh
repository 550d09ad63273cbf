#!/usr/bin/env bash
# KEDA (operator and metrics apiserver) and Prometheus, built from the Go module proxy into a
# cache keyed by their versions, for the autoscaling end-to-end test; prints the directory.
#
#   hack/autoscaling-tools.sh          build (once per version set) and print the directory
#   hack/autoscaling-tools.sh dir      print the directory without building
#
# The directory holds bin/keda, bin/keda-adapter, bin/prometheus and crds/ (KEDA's CRDs as the
# module ships them).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/versions.env"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/triton-vllm-operator}"

GO_VERSION="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
KEY="$(printf '%s\n' "$KEDA_VERSION" "$PROMETHEUS_VERSION" "$GO_VERSION" "autoscaling-v1" \
  | sha256sum | cut -c1-12)"
TOOLS="$CACHE_DIR/autoscaling-$KEY"
BIN="$TOOLS/bin"

log() { printf '[autoscaling-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

go_env() {
  command -v go >/dev/null || die "go not found"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
  export GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/build" GOPATH="$CACHE_DIR/go/path"
}

go_minor() { go env GOVERSION | sed -E 's/^go([0-9]+\.[0-9]+).*/\1/'; }

# A module's directory in the module cache, downloading it if needed.
module_dir() { go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])'; }

# A wrapper module that requires MODULE@VERSION and repeats its replace directives (a
# dependency's replaces are ignored by the go command), then builds PACKAGE into OUTPUT.
build_in_wrapper() {
  local name="$1" module="$2" version="$3" gomod dir
  shift 3
  dir="$TOOLS/build/$name"
  rm -rf "$dir" && mkdir -p "$dir"
  gomod="$(go mod download -json "$module@$version" | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  {
    printf 'module local/%s-build\n\ngo %s\n\n' "$name" "$(go_minor)"
    grep -E '^replace [^ ]+ ([^ ]+ )?=> [^ .][^ ]* v' "$gomod" || true
  } >"$dir/go.mod"
  local pkgs=() spec
  for spec in "$@"; do pkgs+=("${spec%%=*}@$version"); done
  (cd "$dir" && go get -tool "${pkgs[@]}")
  for spec in "$@"; do
    log "building ${spec%%=*} $version"
    (cd "$dir" && go build -trimpath -ldflags "-s -w $LDFLAGS" -o "$BIN/${spec##*=}" "${spec%%=*}")
  done
}

cmd_build() {
  if [ -f "$TOOLS/.complete" ]; then
    echo "$TOOLS"
    return 0
  fi
  go_env
  mkdir -p "$BIN"
  local t0=$SECONDS
  log "cold build into $TOOLS (KEDA and Prometheus: about 30 minutes on 2 cores; cached after)"
  if ! [ -x "$BIN/prometheus" ]; then
    # Module version v0.3XX.Y is Prometheus 3.XX.Y (what `prometheus --version` should say).
    local pv="${PROMETHEUS_VERSION#v0.}"
    LDFLAGS="-X github.com/prometheus/common/version.Version=${pv:0:1}.${pv:1}" \
      build_in_wrapper prometheus github.com/prometheus/prometheus "$PROMETHEUS_VERSION" \
      github.com/prometheus/prometheus/cmd/prometheus=prometheus
  fi
  if ! [ -x "$BIN/keda" ] || ! [ -x "$BIN/keda-adapter" ]; then
    LDFLAGS="-X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION" \
      build_in_wrapper keda github.com/kedacore/keda/v2 "$KEDA_VERSION" \
      github.com/kedacore/keda/v2/cmd/operator=keda \
      github.com/kedacore/keda/v2/cmd/adapter=keda-adapter
  fi
  rm -rf "$TOOLS/crds" && mkdir -p "$TOOLS/crds"
  cp "$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")"/config/crd/bases/*.yaml "$TOOLS/crds/"
  chmod -R u+w "$TOOLS/crds"
  rm -rf "$TOOLS/build"
  touch "$TOOLS/.complete"
  log "built in $((SECONDS - t0)) s"
  echo "$TOOLS"
}

case "${1:-build}" in
  build) cmd_build ;;
  dir) echo "$TOOLS" ;;
  *) die "usage: $0 [build|dir]" ;;
esac
