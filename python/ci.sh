#!/usr/bin/env bash
# The Python package's CI: a venv under target/, the pinned tools and engines, the `embed` example (the tests
# compare with it), the package built from source with the local Rust toolchain, then pytest (Ray and Spark
# jobs included).
#
#   bash python/ci.sh                              # the extension in the dev profile (dependencies at opt-level 3)
#   ALTCLIP_PY_PROFILE=release bash python/ci.sh   # as `pip install ./python` builds it
#
# The dev profile shares the target dir's build scripts, proc-macros and most dependencies with the Rust builds;
# crates whose features differ there (the tests unify dev-dependency features; pyo3/numpy add some) build once.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/target/python-venv"
profile="${ALTCLIP_PY_PROFILE:-dev}"

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
export PATH="$venv/bin:$PATH"  # maturin's PEP 517 hook runs the `maturin` executable
# The package's own tools, then the engines the job tests run (Ray Data, PySpark; Spark uses the machine's Java).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r python/requirements-ci.txt \
    -r python/requirements-ray.txt

# The reference the tests compare with, Parquet output included.
cargo build --example embed --features parquet
export ALTCLIP_EMBED_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/examples/embed"

# --no-build-isolation: build with the pinned maturin above, not a freshly downloaded one; --strip: the dev
# profile's debug info would make a 300 MB wheel to zip and unzip.
MATURIN_PEP517_ARGS="--profile $profile --strip" \
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall \
    --no-deps ./python
"$venv/bin/python" -m pytest -q python/tests "$@"
