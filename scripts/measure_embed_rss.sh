#!/usr/bin/env bash
# Peak RSS of the embed example on directories of N generated 64x64 PNGs (issue #5, item 5): memory must be bounded
# by --batch-size plus the embeddings, not by the number of files.
#
#   scripts/measure_embed_rss.sh [N ...]        (default: 500 3000; images go to a temp dir, removed afterwards)
#
# Env: MODEL_DIR (default tests/fixtures/tiny_full), BATCH (default 16), EMBED (a prebuilt binary; default: build
# with `cargo build --release --example embed`), PYTHON (with Pillow; default /work/pyenv/bin/python or python3).
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -eq 0 ] && counts=(500 3000)
model_dir=${MODEL_DIR:-tests/fixtures/tiny_full}
batch=${BATCH:-16}
python=${PYTHON:-$( [ -x /work/pyenv/bin/python ] && echo /work/pyenv/bin/python || echo python3 )}
if [ -z "${EMBED:-}" ]; then
    cargo build --release --example embed >&2
    EMBED=target/release/examples/embed
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
max=0
for n in "${counts[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
"$python" - "$tmp/all" "$max" <<'PY'
import os, random, sys
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
for i in range(n):
    # Noise, so the PNGs are not trivially compressible (about 12 KB each).
    img = Image.frombytes("RGB", (64, 64), bytes(rng.getrandbits(8) for _ in range(64 * 64 * 3)))
    img.save(os.path.join(out, f"img_{i:05d}.png"))
PY
printf '%8s %8s %14s %10s %12s\n' files batch peak_rss_kib wall_s output_bytes
for n in "${counts[@]}"; do
    dir="$tmp/n$n"
    mkdir -p "$dir"
    # Hard links: the first n images, no extra disk.
    ls "$tmp/all" | head -n "$n" | while read -r f; do ln "$tmp/all/$f" "$dir/$f"; done
    /usr/bin/time -v "$EMBED" --model-dir "$model_dir" --image "$dir" --batch-size "$batch" --quiet \
        --output "$tmp/out.json" 2> "$tmp/time.txt"
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time.txt")
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$tmp/time.txt")
    printf '%8s %8s %14s %10s %12s\n' "$n" "$batch" "$rss" "$wall" "$(stat -c %s "$tmp/out.json")"
done
