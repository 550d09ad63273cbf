# shellcheck shell=bash
# Shared by hack/serving-env.sh and hack/gpu-env.sh (sourced): the serving layout both build, and
# building it once, under a lock, into a directory renamed into place at the end. The caller
# defines CACHE_DIR and log().

# lay_out TMP DEST: in the build directory TMP (final name DEST), lay out backends/python (from
# nvidia-pytriton, wherever the venv finds it; the stub for the venv's Python), bin/tritonserver
# and libpaths, and point the venv's console scripts at DEST.
lay_out() {
  local tmp="$1" dest="$2" found stub libdir pytriton
  found="$("$tmp/venv/bin/python" -c 'import importlib.util as u, sys, sysconfig
print(u.find_spec("pytriton").submodule_search_locations[0])
print("%d.%d" % sys.version_info[:2])
print(sysconfig.get_config_var("LIBDIR"))')"
  { read -r pytriton; read -r stub; read -r libdir; } <<<"$found"
  mkdir -p "$tmp/backends/python" "$tmp/bin"
  cp "$pytriton/tritonserver/backends/python/libtriton_python.so" \
    "$pytriton/tritonserver/backends/python/triton_python_backend_utils.py" "$tmp/backends/python/"
  cp "$pytriton/tritonserver/python_backend_stubs/$stub/triton_python_backend_stub" "$tmp/backends/python/"
  # Paths inside the build directory will be under DEST.
  pytriton="${pytriton/#"$tmp"/"$dest"}"
  # The stub links libpythonX.Y.so; tritonserver needs the libraries nvidia-pytriton ships.
  printf '%s\n%s\n' "$libdir" "$(dirname "$pytriton")/nvidia_pytriton.libs" >"$tmp/libpaths"
  # Console-script shebangs name the build directory; point them at the final one.
  grep -rlI --null "$tmp" "$tmp/venv/bin" | xargs -0 -r sed -i "s#$tmp#$dest#g"
  ln -s "$pytriton/tritonserver/bin/tritonserver" "$tmp/bin/tritonserver"
}

# ensure_built DEST LOCK_NAME BUILD: unless DEST exists, run `BUILD DEST` holding
# $CACHE_DIR/LOCK_NAME; print DEST.
ensure_built() {
  local dest="$1" lock_name="$2" build="$3"
  if [[ ! -d "$dest" ]]; then
    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/$lock_name"
    flock 9
    # Holding the lock, any build directory left behind is from an interrupted build.
    rm -rf "$CACHE_DIR"/.building-*
    [[ -d "$dest" ]] || "$build" "$dest"
  fi
  echo "$dest"
}
