#!/usr/bin/env python3
"""Time transformers' CLIPImageProcessorPil on the images benches/preprocess.rs uses, for the images/s ratio.

Each iteration opens the image from bytes (so decoding is included, as in the Rust bench) and runs the processor with
the default CLIP config (shortest_edge 224, bicubic, center crop 224, rescale + normalize) to a numpy float32 array.
Single-threaded, as the PIL backend is.

Also times JPEG decoding alone (``Image.open`` + ``convert("RGB")``, libjpeg-turbo) for the ``jpeg_decode`` group.

Usage: python scripts/bench_preprocess.py [seconds-per-case]
"""

import io
import sys
import time
from pathlib import Path

from PIL import Image
from transformers import CLIPImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images" / "inputs"
IMAGES = ["jpeg_1000x700.jpg", "rgb_1000x700.png", "jpeg_420_300x200.jpg", "rgba_128x96.png", "photo_china_640x427.jpg"]
# decode alone (Image.open + convert("RGB"), what CLIPImageProcessorPil gets), as benches/preprocess.rs jpeg_decode
JPEGS = ["photo_china_640x427.jpg", "photo_flower_640x427.jpg", "jpeg_1000x700.jpg", "jpeg_prog_300x200.jpg"]


def rate(fn, seconds: float) -> float:
    fn()  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    p = CLIPImageProcessorPil()
    files = {n: (ROOT / n).read_bytes() for n in IMAGES}
    total = 0.0
    for n, data in files.items():
        r = rate(lambda: p(Image.open(io.BytesIO(data)), return_tensors="np"), seconds)
        total += 1.0 / r
        print(f"preprocess_one_image {n:<24} {r:8.1f} images/s")
    print(f"preprocess mean over the {len(files)} images     {len(files) / total:8.1f} images/s")
    for n in JPEGS:
        data = (ROOT / n).read_bytes()
        r = rate(lambda: Image.open(io.BytesIO(data)).convert("RGB"), seconds)
        print(f"jpeg_decode {n:<28} {r:8.1f} images/s")
    batch = [files[IMAGES[i % len(IMAGES)]] for i in range(16)]
    r = rate(lambda: p([Image.open(io.BytesIO(b)) for b in batch], return_tensors="np"), seconds)
    print(f"preprocess_batch16                    {16 * r:8.1f} images/s")
    img = Image.open(io.BytesIO(files["rgb_1000x700.png"])).convert("RGB")
    img.load()
    r = rate(lambda: img.resize((320, 224), Image.Resampling.BICUBIC), seconds)
    print(f"resize_1000x700_to_320x224 bicubic    {r:8.1f} resizes/s")


if __name__ == "__main__":
    main()
