#!/usr/bin/env bash
# Builds altclip's `cuda` feature on a machine with no GPU and no system CUDA, from PyPI's CUDA 13.0 wheels.
#
#   scripts/cuda_build.sh                 # cargo build --release --features cuda --example zero_shot --example embed
#   scripts/cuda_build.sh clippy --features cuda --all-targets -- -D warnings   # any cargo command, same env
#   scripts/cuda_build.sh --print-env     # the exports, for `eval` in a shell
#
# First run installs the toolkit (pip, versions pinned in scripts/cuda/requirements.txt, ~1.2 GB) into
# $ALTCLIP_CUDA_CACHE (default ~/.cache/altclip-cuda), adds the plain-named library links the wheels lack and a
# link-time driver stub (scripts/cuda/libcuda_stub.sh). CUDA_COMPUTE_CAP defaults to 90 (H100/H200).
# A cold build takes ~16 min on 2 cores (most of it nvcc inside candle-kernels); CI does not run it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${ALTCLIP_CUDA_CACHE:-$HOME/.cache/altclip-cuda}
reqs=$repo/scripts/cuda/requirements.txt
toolkit=$cache/site/nvidia/cu13

install_toolkit() {
    echo "cuda_build: installing the CUDA toolkit wheels into $cache/site" >&2
    rm -rf "$cache/site"
    mkdir -p "$cache"
    python3 -m pip install --quiet --no-deps --target "$cache/site" -r "$reqs"
    cp "$reqs" "$cache/installed.txt"
}

# The wheels ship only versioned names (libcudart.so.13); the linker looks for libcudart.so.
link_plain_names() {
    local lib
    for lib in "$toolkit"/lib/lib*.so.*; do
        case $lib in *builtins*|*.alt.*) continue ;; esac
        ln -sf "$(basename "$lib")" "${lib%%.so.*}.so"
    done
}

make_driver_stub() {
    local cudarc
    cudarc=$(cd "$repo" && cargo metadata --format-version 1 --features cuda |
        python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
    "$repo/scripts/cuda/libcuda_stub.sh" "$(dirname "$cudarc")/src/driver/sys/mod.rs" "$toolkit/lib/stubs"
}

if ! cmp -s "$reqs" "$cache/installed.txt" || [ ! -x "$toolkit/bin/nvcc" ]; then
    install_toolkit
fi
link_plain_names
[ -e "$toolkit/lib/stubs/libcuda.so" ] || make_driver_stub

export CUDA_HOME=$toolkit
export PATH=$toolkit/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# nvcc runs its host compiler and ptxas from here; the linker needs the toolkit libraries and the driver stub.
export LIBRARY_PATH=$toolkit/lib:$toolkit/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}

if [ "${1:-}" = "--print-env" ]; then
    for var in CUDA_HOME PATH CUDA_COMPUTE_CAP LIBRARY_PATH; do printf 'export %s=%q\n' "$var" "${!var}"; done
    # To run a binary here (no GPU): the stub stands in for the driver and reports CUDA_ERROR_NO_DEVICE.
    printf '# run here: export LD_LIBRARY_PATH=%q\n' "$toolkit/lib:$toolkit/lib/stubs"
    exit 0
fi
cd "$repo"
if [ $# -eq 0 ]; then
    set -- build --release --features cuda --example zero_shot --example embed
fi
exec cargo "$@"
