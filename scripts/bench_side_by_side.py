#!/usr/bin/env python3
"""Side-by-side benchmark: this crate (candle, f32) vs PyTorch + transformers on the same full-size weights, same
inputs' shapes, same thread count, in one run. Prints a Markdown table (paste it into BENCHMARKS.md).

    python scripts/full_size_parity.py /work/altclip-full          # once: the 3.5 GB random-weight checkpoint
    python scripts/bench_side_by_side.py /work/altclip-full [--reps 3] [--threads 2]

It builds and runs `examples/bench_side_by_side.rs` (cargo run --release) for the Rust side; PyTorch runs in this
process (torch.set_num_threads), except load time and peak RSS, which each side measures in a fresh process.
Inputs: pseudo-random pixels (the values do not change the work) and token ids with `<s> … </s>` and padding 1.
The mixed-length batch: 32 lengths drawn (seed 0) from a log-normal fitted to COCO-style captions (median 14
XLM-R tokens incl. <s>/</s>, long tail to 60), PyTorch padding to the longest as users do; the Rust side is timed
padded the same way and sorted/bucketed by length (8 per bucket, results in input order).
"""

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

D, FF, LAYERS, PATCH_TOKENS = 1024, 4096, 24, 257


def layer_flops(tokens_per_seq: int) -> float:
    """FLOPs per token of one transformer layer (d=1024, ff=4096): q/k/v/out + MLP GEMMs + attention GEMMs."""
    return 2 * (4 * D * D + 2 * D * FF) + 4 * tokens_per_seq * D


def vision_flops() -> float:
    s = PATCH_TOKENS
    return s * LAYERS * layer_flops(s) + 2 * (s - 1) * 588 * D + 2 * D * 768


def text_flops(lengths) -> float:
    """Useful FLOPs of a text batch (each text at its own length: padding is waste, not work)."""
    return sum(n * LAYERS * layer_flops(n) + 2 * n * D * 768 + 2 * 768 * 768 for n in lengths)


def mixed_lengths(n=32, seed=0):
    import random

    rng = random.Random(seed)
    return [max(6, min(60, int(round(math.exp(rng.gauss(math.log(14), 0.35)))))) for _ in range(n)]


_BIN = []


def rust_binary():
    """`$ALTCLIP_BENCH_BIN`, or `cargo build --release --example bench_side_by_side` once per run."""
    if not _BIN:
        path = os.environ.get("ALTCLIP_BENCH_BIN")
        if not path:
            subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "bench_side_by_side"],
                           cwd=ROOT, check=True)
            path = os.path.join(ROOT, "target", "release", "examples", "bench_side_by_side")
        _BIN.append(path)
    return _BIN[0]


def cargo_example(args, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([rust_binary()] + args, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def torch_load_probe(model_dir, threads):
    """Run in a fresh process: from_pretrained to first text embedding, then first image; peak RSS."""
    import torch
    from transformers import AltCLIPModel

    torch.set_num_threads(threads)
    t = time.perf_counter()
    model = AltCLIPModel.from_pretrained(model_dir).eval()
    loaded = time.perf_counter() - t
    ids, mask = text_batch(torch, [16], 16)
    with torch.inference_mode():
        model.get_text_features(input_ids=ids, attention_mask=mask)
        first_text = time.perf_counter() - t
        model.get_image_features(pixel_values=torch.rand(1, 3, 224, 224) * 2 - 1)
        first_image = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(side="torch", workload="load", load_s=loaded, first_text_s=first_text,
                          first_image_s=first_image, peak_rss=rss)))


def text_batch(torch, lengths, seq):
    ids = torch.ones(len(lengths), seq, dtype=torch.long)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, 0] = 0
        for j in range(1, n - 1):
            ids[r, j] = 3 + (r * 7919 + j * 104729) % 249990
        ids[r, n - 1] = 2
        mask[r, :n] = 1
    return ids, mask


def time_reps(reps, f):
    f()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return out


def torch_run(model_dir, reps, threads, mixed, only):
    import torch
    from transformers import AltCLIPModel

    torch.set_num_threads(threads)
    res = []
    a = torch.rand(1024, 4096) * 2 - 1
    w = torch.rand(4096, 4096) * 2 - 1
    res.append(dict(side="torch", workload="gemm_1024x4096x4096", items=1,
                    times=time_reps(5, lambda: torch.nn.functional.linear(a, w))))
    model = AltCLIPModel.from_pretrained(model_dir).eval()
    wanted = lambda n: only is None or n in only.split(",")
    with torch.inference_mode():
        for b in (1, 8):
            if wanted(f"vision_b{b}"):
                px = torch.rand(b, 3, 224, 224) * 2 - 1
                res.append(dict(side="torch", workload=f"vision_b{b}", items=b,
                                times=time_reps(reps, lambda: model.get_image_features(pixel_values=px))))
        for b, s in ((1, 77), (8, 77), (32, 16)):
            if wanted(f"text_b{b}x{s}"):
                ids, mask = text_batch(torch, [s] * b, s)
                res.append(dict(side="torch", workload=f"text_b{b}x{s}", items=b, times=time_reps(
                    reps, lambda: model.get_text_features(input_ids=ids, attention_mask=mask))))
        if wanted("text_mixed"):
            ids, mask = text_batch(torch, mixed, max(mixed))
            res.append(dict(side="torch", workload="text_mixed_padded", items=len(mixed), times=time_reps(
                reps, lambda: model.get_text_features(input_ids=ids, attention_mask=mask))))
    return res


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated workloads (vision_b1,text_b8x77,text_mixed,...)")
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--torch-load-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write raw results here")
    a = p.parse_args()
    if a.torch_load_probe:
        return torch_load_probe(a.model_dir, a.threads)

    mixed = mixed_lengths()
    print(f"# load average before: {os.getloadavg()}", file=sys.stderr)
    print(f"# mixed lengths: {mixed} (longest {max(mixed)}, mean {sum(mixed) / len(mixed):.1f})", file=sys.stderr)
    results = []
    results += cargo_example(["gemm"], a.threads)
    results += cargo_example(["run", a.model_dir, str(a.reps), ",".join(map(str, mixed))]
                             + ([a.only] if a.only else []), a.threads)
    before = os.environ.get("ALTCLIP_BENCH_BASELINE_BIN")
    if before:  # an older build of the example, reported as "candle before" (for before/after tables)
        env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
        out = subprocess.run([before, "run", a.model_dir, str(a.reps), ",".join(map(str, mixed))]
                             + ([a.only] if a.only else []), cwd=ROOT, env=env, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        for line in out.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                r["side"] = "before"
                results.append(r)
    results += torch_run(a.model_dir, a.reps, a.threads, mixed, a.only)
    if not a.skip_load:
        results += cargo_example(["load", a.model_dir], a.threads)
        out = subprocess.run([sys.executable, __file__, a.model_dir, "--threads", str(a.threads),
                              "--torch-load-probe"], check=True, stdout=subprocess.PIPE, text=True).stdout
        results += [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    print(f"# load average after: {os.getloadavg()}", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(results=results, mixed=mixed), f, indent=1)
    report(results, mixed, a)


def report(results, mixed, a):
    by = {(r["side"], r["workload"]): r for r in results}
    # Best of the repetitions: on a shared machine the minimum is the least contaminated estimate.
    med = min
    peak = {}
    for side in ("candle", "torch"):
        r = by.get((side, "gemm_1024x4096x4096"))
        if r:
            peak[side] = 2 * 1024 * 4096 * 4096 / min(r["times"]) / 1e9
    print(f"f32 GEMM 1024x4096x4096 (x·Wᵀ), best of 5: candle {peak.get('candle', 0):.0f} GFLOP/s, "
          f"torch {peak.get('torch', 0):.0f} GFLOP/s; {a.threads} threads, best of {a.reps} reps after a warm-up\n")
    flops = {
        "vision_b1": vision_flops(), "vision_b8": 8 * vision_flops(),
        "text_b1x77": text_flops([77]), "text_b8x77": text_flops([77] * 8), "text_b32x16": text_flops([16] * 32),
        "text_mixed": text_flops(mixed),
    }
    has_before = any(r["side"] == "before" for r in results)
    print("| workload | PyTorch s/item | " + ("candle before s/item | " if has_before else "")
          + "candle s/item | speed-up (torch/candle) | PyTorch GFLOP/s (% of its GEMM) | candle GFLOP/s (% of its GEMM) |")
    print("|---|---|" + ("---|" if has_before else "") + "---|---|---|---|")
    rows = [("vision_b1", "vision, batch 1", "vision_b1", "vision_b1"),
            ("vision_b8", "vision, batch 8", "vision_b8", "vision_b8"),
            ("text_b1x77", "text 77 tok, batch 1", "text_b1x77", "text_b1x77"),
            ("text_b8x77", "text 77 tok, batch 8", "text_b8x77", "text_b8x77"),
            ("text_b32x16", "text 16 tok, batch 32", "text_b32x16", "text_b32x16"),
            ("text_mixed", f"mixed captions ×{len(mixed)}, padded", "text_mixed_padded", "text_mixed_padded"),
            ("text_mixed", f"mixed captions ×{len(mixed)}, candle bucketed", "text_mixed_padded",
             "text_mixed_bucketed")]
    for key, label, tw, cw in rows:
        t, c = by.get(("torch", tw)), by.get(("candle", cw))
        if not t or not c:
            continue
        ts, cs = med(t["times"]) / t["items"], med(c["times"]) / c["items"]
        f = flops[key] / t["items"]
        b = by.get(("before", cw))
        bcol = (f"{med(b['times']) / b['items']:.4f} | " if b else "– | ") if has_before else ""
        print(f"| {label} | {ts:.4f} | {bcol}{cs:.4f} | {ts / cs:.2f}× | {f / ts / 1e9:.0f} ({100 * f / ts / 1e9 / peak['torch']:.0f}%) "
              f"| {f / cs / 1e9:.0f} ({100 * f / cs / 1e9 / peak['candle']:.0f}%) |")
    t, c = by.get(("torch", "load")), by.get(("candle", "load"))
    if t and c:
        e = "| " if has_before else ""
        print(f"| load → first text embedding (s) | {t['first_text_s']:.2f} | {e}{c['first_text_s']:.2f} | "
              f"{t['first_text_s'] / c['first_text_s']:.1f}× | | |")
        print(f"| load → first image embedding (s) | {t['first_image_s']:.2f} | {e}{c['first_image_s']:.2f} | "
              f"{t['first_image_s'] / c['first_image_s']:.1f}× | | |")
        size = os.path.getsize(os.path.join(a.model_dir, "model.safetensors"))
        print(f"| peak RSS after load + 1 text + 1 image (GB; weights {size / 1e9:.2f} GB) | "
              f"{t['peak_rss'] / 1e9:.2f} | {e}{c['peak_rss'] / 1e9:.2f} | {t['peak_rss'] / c['peak_rss']:.2f}× | | |")


if __name__ == "__main__":
    main()
