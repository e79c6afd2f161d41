#!/usr/bin/env bash
# Ray Data's overhead: the same images through `embed --format parquet` (one process, all cores) and through
# examples/python/ray_embed.py (2 actors, one thread each), then a row-for-row comparison. No timing is asserted.
#
#   pip install ./python -r python/requirements-ray.txt
#   cargo build --release --example embed --features parquet
#   bash scripts/bench_ray.sh MODEL_DIR IMAGE_DIR [OUT_DIR]
set -euo pipefail
model="$1" images="$2" out="${3:-$(mktemp -d)}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
embed="${ALTCLIP_EMBED_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/examples/embed}"
export RAY_USAGE_STATS_ENABLED=0
TIMEFORMAT="wall %R s"
lscpu | grep -E "Model name|^CPU\(s\)|^Flags" | cut -c1-200
mkdir -p "$out"
echo "== single process: $embed"
time "$embed" --model-dir "$model" --image "$images" --format parquet --output "$out/single.parquet" \
    --batch-size 16 --quiet 2>&1 | grep -E "images/s"
echo "== Ray, 2 workers"
time python "$repo/examples/python/ray_embed.py" --model-dir "$model" --images "$images" --output "$out/ray" \
    --num-workers 2 --num-cpus-per-worker 0.5 --batch-size 16 | tail -1
python - "$out" <<'PY'
import sys
import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq

out = sys.argv[1]
single = {r["path"]: r for r in pq.read_table(f"{out}/single.parquet").to_pylist()}
ray_rows = ds.dataset(f"{out}/ray", format="parquet").to_table().to_pylist()
ray = {r["path"]: r for r in ray_rows}
diff = max((float(np.max(np.abs(np.subtract(r["embedding"], ray[p]["embedding"]))))
            for p, r in single.items() if r["embedding"] is not None), default=0.0)
errors = sum(r["embedding"] is None for r in single.values())
print(f"rows: single {len(single)}, ray {len(ray_rows)} ({len(ray_rows) - len(ray)} duplicates); "
      f"same paths {set(single) == set(ray)}; error rows {errors}; max |diff| {diff:.2e}")
PY
