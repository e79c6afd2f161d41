#!/usr/bin/env python3
"""Images/s and texts/s of the Python package (`altclip.Embedder`) vs transformers' `AltCLIPModel` +
`AltCLIPProcessor` on the same weights and inputs, batch 8, both on 2 threads; end to end from image files
(decode, preprocess, model, normalise) and from strings (tokenize, model, normalise). Prints the CPU and a
Markdown table; no timing is asserted.

    pip install ./python torch transformers pillow
    python scripts/bench_python_api.py /path/to/AltCLIP [--reps 5] [--threads 2] [--images DIR]

MODEL_DIR is a local model directory both libraries can read (e.g. tests/fixtures/tiny_full for a smoke run).
"""

import argparse
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8
TEXTS = [
    "a photo of a cat",
    "一杯咖啡",
    "宇宙飛行士の写真",
    "a red bicycle leaning against a brick wall in the rain",
    "eine Katze schläft auf dem Sofa",
    "un astronaute flotte dans l'espace",
    "강아지가 공원에서 뛰어논다",
    "кофе и круассан на завтрак",
]
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "amx_bf16",
              "amx_tile", "asimd", "sve", "bf16")


def cpu() -> str:
    """The CPU model and its SIMD flags, from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value:
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    simd = " ".join(f for f in SIMD_FLAGS if f in flags) or "?"
    return f"{model} ({os.cpu_count()} logical CPUs); SIMD flags: {simd}"


def per_second(fn, items: int, reps: int) -> float:
    """Items per second of `fn` (one warm-up call, then the best of `reps`)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return items / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", default=str(ROOT / "examples" / "images"), help="directory of .png/.jpg files")
    args = parser.parse_args()

    # Before either library starts its thread pool.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AltCLIPModel, AltCLIPProcessor

    import altclip

    torch.set_num_threads(args.threads)
    files = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    paths = [str(files[i % len(files)]) for i in range(BATCH)]

    emb = altclip.Embedder(args.model_dir)
    model = AltCLIPModel.from_pretrained(args.model_dir).eval()
    processor = AltCLIPProcessor.from_pretrained(args.model_dir)

    def features(out):
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def hf_images():
        pixels = processor(images=[Image.open(p) for p in paths], return_tensors="pt")["pixel_values"]
        f = features(model.get_image_features(pixel_values=pixels))
        return (f / f.norm(dim=-1, keepdim=True)).numpy()

    @torch.inference_mode()
    def hf_texts():
        enc = processor(text=TEXTS, padding=True, truncation=True, return_tensors="pt")
        f = features(model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
        return (f / f.norm(dim=-1, keepdim=True)).numpy()

    di = float(np.abs(emb.embed_images(paths) - hf_images()).max())
    dt = float(np.abs(emb.embed_texts(TEXTS) - hf_texts()).max())

    rows = [
        ("images/s", per_second(lambda: emb.embed_images(paths), BATCH, args.reps),
         per_second(hf_images, BATCH, args.reps)),
        ("texts/s", per_second(lambda: emb.embed_texts(TEXTS), BATCH, args.reps),
         per_second(hf_texts, BATCH, args.reps)),
    ]
    print(f"CPU: {cpu()}")
    print(f"model: {args.model_dir} (dim {emb.dim}); batch {BATCH}; {args.threads} threads; "
          f"torch {torch.__version__}; altclip {altclip.__version__}")
    print(f"max |Δ| altclip vs transformers: images {di:.2e}, texts {dt:.2e}\n")
    print("| | altclip (Python) | transformers | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for what, ours, theirs in rows:
        print(f"| {what} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}× |")


if __name__ == "__main__":
    main()
