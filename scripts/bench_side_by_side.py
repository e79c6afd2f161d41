#!/usr/bin/env python3
"""Side-by-side benchmark: this crate (candle, f32) vs PyTorch + transformers on the same full-size weights, same
inputs' shapes, same thread count, in one run. Prints a Markdown table (paste it into BENCHMARKS.md).

    python scripts/full_size_parity.py /work/altclip-full          # once: the 3.5 GB random-weight checkpoint
    python scripts/bench_side_by_side.py /work/altclip-full [--reps 3] [--threads 2] [--rounds 2]

It builds and runs `examples/bench_side_by_side.rs` (cargo run --release) for the Rust side; PyTorch runs in this
process (torch.set_num_threads), except load time and peak RSS, which each side measures in a fresh process.
Inputs: pseudo-random pixels (the values do not change the work) and token ids with `<s> … </s>` and padding 1.
The mixed-length batch: 32 lengths drawn (seed 0) from a log-normal fitted to COCO-style captions (median 14
XLM-R tokens incl. <s>/</s>, long tail to 60), PyTorch padding to the longest as users do; the Rust side is timed
padded the same way and with the crate's padding-aware batching (`TextBatching::default()`, results in input
order). `--features mkl` builds the Rust side with Intel MKL's GEMM (see BENCHMARKS.md for where MKL comes from).
`--quantize` (default `int8`) adds the crate's quantized models; with `int8` among them PyTorch's own dynamic int8
(`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`) is timed beside it. The CPU model
and the flags that pick kernels (AVX2/FMA, AVX-512F, VNNI, AMX) head the output. `--rounds 2` repeats the timed
runs with the other side first and keeps each row's best: on a shared VM whose speed drifts by tens of percent within
minutes, one round lets a slow phase land on one side only.
"""

import argparse
import json
import math
import os
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


def rust_binary(features=None):
    """`$ALTCLIP_BENCH_BIN`, or `cargo build --release --example bench_side_by_side` once per run."""
    if not _BIN:
        path = os.environ.get("ALTCLIP_BENCH_BIN")
        if not path:
            subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "bench_side_by_side"]
                           + (["--features", features] if features else []), cwd=ROOT, check=True)
            path = os.path.join(ROOT, "target", "release", "examples", "bench_side_by_side")
        _BIN.append(path)
    return _BIN[0]


def rust_env(threads):
    """The thread count for rayon (candle's own kernels) and for MKL's OpenMP pool (`--features mkl` builds)."""
    return dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))


def cargo_example(args, threads, features=None):
    out = subprocess.run([rust_binary(features)] + args, cwd=ROOT, env=rust_env(threads), check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def peak_rss_bytes():
    """This process's peak RSS (`VmHWM`), as the Rust side measures it. Not `getrusage().ru_maxrss`: on Linux that
    carries the parent's RSS at fork time over exec, so a probe spawned by a process holding a model would report
    the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def torch_load_probe(model_dir, threads, int8=False):
    """Run in a fresh process: from_pretrained (then quantize_dynamic with `int8`) to first text embedding, then
    first image; peak RSS."""
    import torch
    from transformers import AltCLIPModel

    torch.set_num_threads(threads)
    t = time.perf_counter()
    model = AltCLIPModel.from_pretrained(model_dir).eval()
    if int8:
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    loaded = time.perf_counter() - t
    ids, mask = text_batch(torch, [16], 16)
    with torch.inference_mode():
        model.get_text_features(input_ids=ids, attention_mask=mask)
        first_text = time.perf_counter() - t
        model.get_image_features(pixel_values=torch.rand(1, 3, 224, 224) * 2 - 1)
        first_image = time.perf_counter() - t
    rss = peak_rss_bytes()
    print(json.dumps(dict(side="torch_int8" if int8 else "torch", workload="load", load_s=loaded, first_text_s=first_text,
                          first_image_s=first_image, peak_rss=rss)))


def warm_page_cache(model_dir):
    """Reads the weight file once, so every load probe starts from a cached file: some VMs page cold file pages
    out (DAMON `pageout`), which made whichever probe ran first read from disk."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        while f.read(64 << 20):
            pass


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


def torch_run(model_dir, reps, threads, mixed, only, int8=False):
    import torch
    from transformers import AltCLIPModel

    torch.set_num_threads(threads)
    res = []
    a = torch.rand(1024, 4096) * 2 - 1
    w = torch.rand(4096, 4096) * 2 - 1
    res.append(dict(side="torch", workload="gemm_1024x4096x4096", items=1,
                    times=time_reps(5, lambda: torch.nn.functional.linear(a, w))))
    model = AltCLIPModel.from_pretrained(model_dir).eval()
    res += torch_workloads(torch, model, "torch", reps, mixed, only)
    if int8:  # PyTorch's own dynamic int8 (fbgemm/x86 engine): nn.Linear weights int8, activations per call
        qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        res += torch_workloads(torch, qmodel, "torch_int8", reps, mixed, only)
    return res


def torch_workloads(torch, model, side, reps, mixed, only):
    """Times `model` on every workload of the table (those in `only`), as `side`."""
    res = []
    wanted = lambda n: only is None or n in only.split(",")
    with torch.inference_mode():
        for b in (1, 8):
            if wanted(f"vision_b{b}"):
                px = torch.rand(b, 3, 224, 224) * 2 - 1
                res.append(dict(side=side, workload=f"vision_b{b}", items=b,
                                times=time_reps(reps, lambda: model.get_image_features(pixel_values=px))))
        for b, s in ((1, 77), (8, 77), (32, 16)):
            if wanted(f"text_b{b}x{s}"):
                ids, mask = text_batch(torch, [s] * b, s)
                res.append(dict(side=side, workload=f"text_b{b}x{s}", items=b, times=time_reps(
                    reps, lambda: model.get_text_features(input_ids=ids, attention_mask=mask))))
        if wanted("text_mixed"):
            ids, mask = text_batch(torch, mixed, max(mixed))
            res.append(dict(side=side, workload="text_mixed_padded", items=len(mixed), times=time_reps(
                reps, lambda: model.get_text_features(input_ids=ids, attention_mask=mask))))
    return res


def json_lines(cmd, env=None, optional=False):
    """The JSON lines `cmd` prints; an `optional` run that fails is reported and skipped, not fatal."""
    run = subprocess.run(cmd, cwd=ROOT, env=env, check=not optional, stdout=subprocess.PIPE, text=True)
    if run.returncode:
        print(f"# skipped: {' '.join(cmd[:2])} ... exited with {run.returncode}", file=sys.stderr)
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def cpu_line():
    """The CPU model and the flags that decide which kernels run (lscpu / /proc/cpuinfo)."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]
    return f"{model}, {os.cpu_count()} logical CPUs; " + " ".join(f"{x} {'yes' if x in flags else 'no'}" for x in wanted)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the timed runs, alternating which side goes first, and keep each row's best: on a "
                        "shared VM one slow phase then cannot land on one side only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default=None, help="comma-separated workloads (vision_b1,text_b8x77,text_mixed,...)")
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--torch-load-probe", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--int8", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write raw results here")
    p.add_argument("--features", default=None, help="cargo features of the Rust build, e.g. mkl")
    p.add_argument("--onnx-dir", default=None,
                   help="ONNX Runtime column: the output of `scripts/bench_onnx.py export <model_dir> <onnx_dir>`")
    p.add_argument("--quantize", default="int8",
                   help="also time quantized candle models (default int8, with PyTorch's quantize_dynamic int8 "
                        "beside it), e.g. int8,q8_0,q4k; '' for none")
    p.add_argument("--half", default=None, help="also time candle in these dtypes, e.g. bf16,f16")
    p.add_argument("--from-json", default=None, help="only print the table of an earlier --json")
    p.add_argument("--baseline-label", default="candle before",
                   help="column name for $ALTCLIP_BENCH_BASELINE_BIN's results (e.g. 'candle, pure Rust GEMM')")
    a = p.parse_args()
    if a.torch_load_probe:
        return torch_load_probe(a.model_dir, a.threads, a.int8)
    if a.from_json:
        with open(a.from_json) as f:
            saved = json.load(f)
        return report(saved["results"], saved["mixed"], a, saved.get("cpu"))

    mixed = mixed_lengths()
    print(f"# CPU: {cpu_line()}", file=sys.stderr)
    print(f"# load average before: {os.getloadavg()}", file=sys.stderr)
    print(f"# mixed lengths: {mixed} (longest {max(mixed)}, mean {sum(mixed) / len(mixed):.1f})", file=sys.stderr)
    run_args = ["run", a.model_dir, str(a.reps), ",".join(map(str, mixed))] + ([a.only] if a.only else [])
    quantize = [q for q in (a.quantize or "").split(",") if q]
    onnx_script = [sys.executable, os.path.join(HERE, "bench_onnx.py")]
    results = []
    for round_ in range(a.rounds):
        sides = [candle_runs, other_runs] if round_ % 2 == 0 else [other_runs, candle_runs]
        for side in sides:
            results += side(a, run_args, mixed, quantize, onnx_script)
    results = merge_rounds(results)
    if not a.skip_load:
        warm_page_cache(a.model_dir)
        results += cargo_example(["load", a.model_dir], a.threads)
        warm_page_cache(a.model_dir)
        results += json_lines([sys.executable, __file__, a.model_dir, "--threads", str(a.threads),
                               "--torch-load-probe"])
        # Quantized loads: the crate quantizes each layer as it loads; PyTorch loads f32, then quantize_dynamic.
        for q in quantize:
            warm_page_cache(a.model_dir)
            results += json_lines([rust_binary(), "load", a.model_dir],
                                  dict(rust_env(a.threads), ALTCLIP_BENCH_QUANTIZE=q), optional=True)
        if "int8" in quantize:
            warm_page_cache(a.model_dir)
            results += json_lines([sys.executable, __file__, a.model_dir, "--threads", str(a.threads),
                                   "--torch-load-probe", "--int8"])
        if a.onnx_dir:
            results += json_lines(onnx_script + ["load-probe", a.onnx_dir, "--threads", str(a.threads)])
    print(f"# load average after: {os.getloadavg()}", file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(results=results, mixed=mixed, cpu=cpu_line()), f, indent=1)
    report(results, mixed, a)


def candle_runs(a, run_args, mixed, quantize, onnx_script):
    """The Rust side's timed runs: its GEMM, f32, each quantization and dtype, and the baseline build if any."""
    results = cargo_example(["gemm"], a.threads, a.features)
    results += cargo_example(run_args, a.threads)
    for q in quantize:
        results += json_lines([rust_binary()] + run_args, dict(rust_env(a.threads), ALTCLIP_BENCH_QUANTIZE=q),
                              optional=True)
    for d in (a.half or "").split(","):
        if d:
            results += json_lines([rust_binary()] + run_args, dict(rust_env(a.threads), ALTCLIP_BENCH_DTYPE=d),
                                  optional=True)
    before = os.environ.get("ALTCLIP_BENCH_BASELINE_BIN")
    if before:  # another build of the example (older, or other features), its column named by --baseline-label
        for r in json_lines([before] + run_args, rust_env(a.threads)):
            r["side"] = "before"
            results.append(r)
    return results


def other_runs(a, run_args, mixed, quantize, onnx_script):
    """PyTorch's timed runs (f32, and dynamic int8 when int8 is asked for), then ONNX Runtime's if exported."""
    results = torch_run(a.model_dir, a.reps, a.threads, mixed, a.only, int8="int8" in quantize)
    if a.onnx_dir:  # its own process: ORT's thread pool must not share a process with torch's
        results += json_lines(onnx_script + ["run", a.onnx_dir, "--reps", str(a.reps), "--threads", str(a.threads)]
                              + (["--only", a.only] if a.only else []))
    return results


def merge_rounds(results):
    """One entry per (side, workload): the rounds' timings concatenated (the report keeps their best), any other
    entry as first seen."""
    merged = {}
    for r in results:
        key = (r["side"], r["workload"])
        if key in merged and "times" in r:
            merged[key]["times"] = merged[key]["times"] + r["times"]
        else:
            merged.setdefault(key, dict(r))
    return list(merged.values())


def report(results, mixed, a, cpu=None):
    print(f"CPU: {cpu or cpu_line()}\n")
    by = {(r["side"], r["workload"]): r for r in results}
    # Best of the repetitions: on a shared machine the minimum is the least contaminated estimate.
    best = lambda r: min(r["times"]) / r["items"]
    gemm_flop = 2 * 1024 * 4096 * 4096
    peak = {side: gemm_flop / min(r["times"]) / 1e9 for (side, w), r in by.items() if w == "gemm_1024x4096x4096"}
    print("GEMM 1024x4096x4096 (x·Wᵀ), best of 5, GFLOP/s (f32-equivalent): "
          + ", ".join(f"{side} {g:.0f}" for side, g in peak.items())
          + f"; {a.threads} threads, best of {a.reps} reps after a warm-up"
          + (f", in each of {a.rounds} rounds (sides alternating first)" if a.rounds > 1 else "") + "\n")
    flops = {
        "vision_b1": vision_flops(), "vision_b8": 8 * vision_flops(),
        "text_b1x77": text_flops([77]), "text_b8x77": text_flops([77] * 8), "text_b32x16": text_flops([16] * 32),
        "text_mixed": text_flops(mixed),
    }
    rows = [("vision_b1", "vision, batch 1", "vision_b1", "vision_b1"),
            ("vision_b8", "vision, batch 8", "vision_b8", "vision_b8"),
            ("text_b1x77", "text 77 tok, batch 1", "text_b1x77", "text_b1x77"),
            ("text_b8x77", "text 77 tok, batch 8", "text_b8x77", "text_b8x77"),
            ("text_b32x16", "text 16 tok, batch 32", "text_b32x16", "text_b32x16"),
            ("text_mixed", f"mixed captions ×{len(mixed)}, padded", "text_mixed_padded", "text_mixed_padded"),
            ("text_mixed", f"mixed captions ×{len(mixed)}, candle length-bucketed", "text_mixed_padded",
             "text_mixed_bucketed")]
    # Quantized and f16/bf16 runs that timed a workload (the `gemm` probe alone makes no column).
    quant = sorted({side for side, w in by if side.startswith("candle_") and not w.startswith("gemm")})
    torch8 = any(side == "torch_int8" for side, _ in by)
    extra = [s for s in ("onnx", "before") if any(side == s for side, _ in by)]
    names = {"onnx": "ONNX Runtime", "before": a.baseline_label}
    print("| workload | PyTorch s/item | " + "".join(f"{names[s]} s/item | " for s in extra)
          + "candle s/item | candle vs PyTorch | " + ("candle vs faster of PyTorch/ONNX | " if "onnx" in extra else "")
          + "PyTorch GFLOP/s (% of its GEMM) | candle GFLOP/s (% of its GEMM) | "
          + "".join(f"{q[7:].upper()} s/item (vs PyTorch) | " for q in quant)
          + ("PyTorch INT8 s/item | candle INT8 vs PyTorch INT8 | " if torch8 else ""))
    print("|---" * (6 + len(extra) + ("onnx" in extra) + len(quant) + 2 * bool(torch8)) + "|")
    for key, label, tw, cw in rows:
        t, c = by.get(("torch", tw)), by.get(("candle", cw))
        if not t or not c:
            continue
        ts, cs = best(t), best(c)
        f = flops[key] / t["items"]
        line = f"| {label} | {ts:.4f} | "
        for s in extra:
            r = by.get((s, tw if s == "onnx" else cw))
            line += f"{best(r):.4f} | " if r else "– | "
        line += f"{cs:.4f} | {ts / cs:.2f}× | "
        if "onnx" in extra:
            o = by.get(("onnx", tw))
            line += f"{min(ts, best(o)) / cs:.2f}× | " if o else "– | "
        line += (f"{f / ts / 1e9:.0f} ({100 * f / ts / 1e9 / peak['torch']:.0f}%) | "
                 f"{f / cs / 1e9:.0f} ({100 * f / cs / 1e9 / peak['candle']:.0f}%) | ")
        for q in quant:
            r = by.get((q, cw))
            line += f"{best(r):.4f} ({ts / best(r):.2f}×) | " if r else "– | "
        if torch8:
            t8, c8 = by.get(("torch_int8", tw)), by.get(("candle_int8", cw))
            line += f"{best(t8):.4f} | " if t8 else "– | "
            line += f"{best(t8) / best(c8):.2f}× | " if t8 and c8 else "– | "
        print(line)
    load = {s: by.get((s, "load")) for s in ("torch", "onnx", "candle")}
    if load["torch"] and load["candle"]:
        t, c, o = load["torch"], load["candle"], load["onnx"]
        pad = "".join("| " for s in extra if s != "onnx")
        # The ONNX Runtime column, when there is one: `fmt(o)`, or a dash where its load probe did not run.
        ocol = lambda fmt: (f"{fmt(o)} | " if o else "– | ") if "onnx" in extra else ""
        for key, label in (("first_text_s", "load → first text embedding (s)"),
                           ("first_image_s", "load → first image embedding (s)")):
            print(f"| {label} | {t[key]:.2f} | {ocol(lambda r: format(r[key], '.2f'))}{pad}{c[key]:.2f} | {t[key] / c[key]:.1f}× | |")
        size = os.path.getsize(os.path.join(a.model_dir, "model.safetensors"))
        gb = lambda r: f"{r['peak_rss'] / 1e9:.2f}"
        print(f"| peak RSS after load + 1 text + 1 image (GB; weights {size / 1e9:.2f} GB) | {gb(t)} | "
              f"{ocol(gb)}"
              f"{pad}{gb(c)} | {c['peak_rss'] / size:.2f}× the file (PyTorch {t['peak_rss'] / size:.2f}×) | |")
    t8, c8 = by.get(("torch_int8", "load")), by.get(("candle_int8", "load"))
    if t8 and c8:
        size = os.path.getsize(os.path.join(a.model_dir, "model.safetensors"))
        print(f"\nINT8 load (PyTorch: from_pretrained + quantize_dynamic; candle: quantized as it loads): "
              f"→ first text {t8['first_text_s']:.2f} s vs {c8['first_text_s']:.2f} s "
              f"({t8['first_text_s'] / c8['first_text_s']:.1f}×), → first image {t8['first_image_s']:.2f} s vs "
              f"{c8['first_image_s']:.2f} s ({t8['first_image_s'] / c8['first_image_s']:.1f}×); peak RSS "
              f"{t8['peak_rss'] / 1e9:.2f} GB ({t8['peak_rss'] / size:.2f}× the file) vs {c8['peak_rss'] / 1e9:.2f} GB "
              f"({c8['peak_rss'] / size:.2f}×)")
    for q in quant:
        r = by.get((q, "accuracy"))
        if r:
            print(f"\n{q[7:].upper()} vs f32 (same inputs): image embedding cosine min {r['image_cos_min']:.4f} "
                  f"(mean {r['image_cos_mean']:.4f}), text min {r['text_cos_min']:.4f} (mean {r['text_cos_mean']:.4f}); "
                  f"zero-shot top-1 agreement image→text {r['top1_image_to_text'][0]}/{r['top1_image_to_text'][1]}, "
                  f"text→image {r['top1_text_to_image'][0]}/{r['top1_text_to_image'][1]}")


if __name__ == "__main__":
    main()
