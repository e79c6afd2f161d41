#!/usr/bin/env bash
# Writes a link-time stand-in for the CUDA driver library: $2/libcuda.so (soname libcuda.so.1), one function per
# driver entry point cudarc's bindings ($1 = cudarc's src/driver/sys/mod.rs) declare. candle turns on cudarc's
# `dynamic-linking`, so the linker needs libcuda.so, and no PyPI wheel carries it. The real driver's libcuda.so.1
# replaces the stub at run time; if the stub itself is loaded, every call returns CUDA_ERROR_NO_DEVICE (100), what
# a driver on a machine without a GPU says, so a stub-built binary exercises the "no GPU" paths.
set -euo pipefail
sys_rs=$1 out=$2
mkdir -p "$out"
src=$(mktemp --suffix=.c)
trap 'rm -f "$src"' EXIT
# cuGetErrorName/String answer, so errors read "CUDA_ERROR_NO_DEVICE, ... (link-time stub ...)".
cat >"$src" <<'C'
int cuGetErrorName(int error, const char **name) { *name = "CUDA_ERROR_NO_DEVICE"; return error == 100 ? 0 : 1; }
int cuGetErrorString(int error, const char **text) {
    *text = "no CUDA-capable device is detected (the altclip link-time stub libcuda.so, not a driver)";
    return error == 100 ? 0 : 1;
}
C
grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+\(' "$sys_rs" | sed -E 's/^pub unsafe fn ([A-Za-z0-9_]+)\(/\1/' | sort -u |
    grep -vx 'cuGetErrorName\|cuGetErrorString' | awk '{ printf "int %s(void) { return 100; }\n", $1 }' >>"$src"
grep -q '^int cuInit' "$src" || { echo "no driver entry points found in $sys_rs" >&2; exit 1; }
cc -shared -fPIC -o "$out/libcuda.so" -Wl,-soname,libcuda.so.1 "$src"
ln -sf libcuda.so "$out/libcuda.so.1"
