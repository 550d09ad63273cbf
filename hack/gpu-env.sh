#!/usr/bin/env bash
# The GPU serving environment of `make bench-gpu`: vLLM (the CUDA build pinned in versions.env),
# nvidia-pytriton's tritonserver and their requirements, on top of a Python that already has
# torch (the CUDA build vLLM pins). Built once into a cached directory keyed by the lock.
#
#   hack/gpu-env.sh --print                 build it if missing, print its directory on stdout
#   hack/gpu-env.sh --wheelhouse DIR [HAVE] download the pinned wheels into DIR (needs an index),
#                                           for an air-gapped GPU machine. HAVE: `pip freeze` (or
#                                           one name a line) of that machine's Python; packages it
#                                           has are left out, except those pinned for the stub
#   hack/gpu-env.sh --lock                  re-resolve hack/gpu-requirements.txt (needs an index)
#
# GPU_PYTHON: the base Python (default python3; it must be $GPU_PYTHON_VERSION with torch
# $TORCH_GPU_VERSION). GPU_WHEELHOUSE=DIR: install offline from DIR; every pinned package must be
# there or in the base Python already.
#
# Layout of the built directory (as hack/serving-env.sh's, so hack/run-tritonserver.sh serves it):
#   venv/              venv over the base Python's packages (torch), with the pinned packages
#   backends/python/   libtriton_python.so, triton_python_backend_utils.py, the stub for its Python
#   bin/tritonserver   link to the tritonserver binary that nvidia-pytriton ships
#   libpaths           the LD_LIBRARY_PATH entries tritonserver and the stub need, one per line
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../versions.env
source "$ROOT/versions.env"
CACHE_DIR="${CACHE_DIR:-$HOME/.cache/triton-vllm-operator}"
PYTHON="${GPU_PYTHON:-python3}"
LOCK_FILE="$ROOT/hack/gpu-requirements.txt"
SELF="$ROOT/hack/gpu-env.sh"
# shellcheck source=env-common.sh
source "$ROOT/hack/env-common.sh"
# The stub needs these versions, whatever the base Python has (see hack/gpu_lock.py).
STUB_PINS="numpy scipy protobuf"

log() { echo "gpu-env: $*" >&2; }

env_dir() {
  local hash
  hash="$( (cat "$LOCK_FILE" "$SELF" "$ROOT/hack/env-common.sh"; "$PYTHON" -c 'import sys; print(sys.executable)') \
    | sha256sum | cut -c1-12)"
  echo "$CACHE_DIR/gpu-$hash"
}

# The lock's pins, less those whose package HAVE (a file of names or name==version) lists.
pins_less() {
  "$PYTHON" - "$LOCK_FILE" "$1" "$STUB_PINS" <<'EOF'
import re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
lock, have_file, keep = sys.argv[1:4]
have = {norm(re.split(r"[=<>@ ;]", l.strip(), maxsplit=1)[0]) for l in open(have_file) if l.strip()}
for line in open(lock):
    line = line.strip()
    if line and not line.startswith("#"):
        name = norm(line.split("==")[0])
        if name not in have or name in keep.split():
            print(line)
EOF
}

# The base Python's installed distributions, one name a line.
base_packages() {
  "$PYTHON" -c 'import importlib.metadata as m; print("\n".join({d.metadata["Name"] for d in m.distributions() if d.metadata["Name"]}))'
}

check_base() {
  "$PYTHON" - "$GPU_PYTHON_VERSION" "$TORCH_GPU_VERSION" <<'EOF' || exit 1
import sys
want_python, want_torch = sys.argv[1:3]
have_python = "%d.%d" % sys.version_info[:2]
if have_python != want_python:
    sys.exit(f"gpu-env: {sys.executable} is Python {have_python}; set GPU_PYTHON to a Python {want_python}")
try:
    import torch
except ImportError:
    sys.exit(f"gpu-env: {sys.executable} has no torch; install torch=={want_torch} (CUDA build) into it")
if torch.__version__.split("+")[0] != want_torch or not torch.version.cuda:
    sys.exit(f"gpu-env: {sys.executable} has torch {torch.__version__}; vLLM needs torch=={want_torch} (CUDA build)")
EOF
}

build() {
  local dest="$1" tmp start site
  start=$SECONDS
  check_base
  mkdir -p "$CACHE_DIR"
  tmp="$(mktemp -d "$CACHE_DIR/.building-XXXXXX")"
  # shellcheck disable=SC2064  # expand now: tmp is local to this function
  trap "rm -rf '$tmp'" EXIT
  "$PYTHON" -m venv --system-site-packages --without-pip "$tmp/venv"
  site="$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # A venv made from another venv sees only the interpreter's own site-packages: name the base
  # Python's (torch) in a .pth, which puts them after the venv's own.
  "$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' >"$site/zz-base-python.pth"
  base_packages >"$tmp/have.txt"
  pins_less "$tmp/have.txt" >"$tmp/pins.txt"
  local source=()
  if [[ -n "${GPU_WHEELHOUSE:-}" ]]; then
    source=(--no-index --find-links "$GPU_WHEELHOUSE")
    log "installing $(wc -l <"$tmp/pins.txt") pinned packages from $GPU_WHEELHOUSE"
  else
    log "installing $(wc -l <"$tmp/pins.txt") pinned packages from the package index"
  fi
  # Exact pins of a complete lock: no resolver runs. --target puts them in the venv, ahead of the
  # base Python's own packages (numpy 1 over numpy 2, for the stub).
  "$PYTHON" -m pip install --quiet --no-deps --no-compile --disable-pip-version-check \
    "${source[@]}" --target "$site" -r "$tmp/pins.txt"

  lay_out "$tmp" "$dest"
  mv -T "$tmp" "$dest"
  trap - EXIT
  log "built $dest in $((SECONDS - start)) s"
}

ensure() {
  ensure_built "$(env_dir)" .gpu.lock build
}

wheelhouse() {
  local dir="$1" have="${2:-}" tmp
  [[ -n "$have" ]] || have=/dev/null
  mkdir -p "$dir"
  tmp="$(mktemp "${TMPDIR:-/tmp}/gpu-pins.XXXXXX")"
  pins_less "$have" >"$tmp"
  "$PYTHON" "$ROOT/hack/gpu_lock.py" download "$GPU_PYTHON_VERSION" "$dir" "$tmp"
  log "$(wc -l <"$tmp") wheels in $dir ($(du -sh "$dir" | cut -f1))"
  rm -f "$tmp"
}

case "${1:-}" in
  --print) ensure ;;
  --wheelhouse) wheelhouse "${2:?usage: $0 --wheelhouse DIR [HAVE]}" "${3:-}" ;;
  --lock)
    "$PYTHON" "$ROOT/hack/gpu_lock.py" lock "$VLLM_GPU_VERSION" "$TRITON_PYPI_VERSION" \
      "$GPU_PYTHON_VERSION" >"$LOCK_FILE.tmp"
    mv "$LOCK_FILE.tmp" "$LOCK_FILE"
    log "wrote $LOCK_FILE ($(grep -vc '^#' "$LOCK_FILE") pins)"
    ;;
  *)
    echo "usage: $0 --print | --wheelhouse DIR [HAVE] | --lock" >&2
    exit 2
    ;;
esac
