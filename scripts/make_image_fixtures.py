#!/usr/bin/env python3
"""Generate the image-processor fixtures in tests/fixtures/images/.

Deterministic (fixed seeds), small.  Writes:

* ``inputs/<name>.<ext>`` — synthetic photo-like images (smooth gradients, edges, fine stripes, light noise) in many
  formats, modes and sizes, saved with Pillow (plus a hand-written PNG encoder for 16-bit and tRNS cases that Pillow
  cannot write);
* ``bad/…`` — corrupt, truncated, empty, mislabelled and giant-header files;
* ``configs/<name>.json`` + ``configs/<name>.expected.json`` — preprocessor_config.json in every hub form, and what
  transformers' ``CLIPImageProcessorPil`` resolves them to;
* ``expected_<config>.safetensors`` — for every (image, config) pair the reference uint8 image after
  convert_rgb + resize + center-crop (``<image>.u8``, CHW) and, for a few images, the final ``pixel_values``
  (``<image>.pv``, CHW float32), plus ``norm_table`` (3x256 float32: the pixel value each uint8 level becomes in each
  channel, so every image's pixel_values can be checked bit-for-bit against its u8 image);
* ``manifest.json`` — the list of cases the Rust tests iterate.

The reference is transformers' ``CLIPImageProcessorPil`` (PIL backend) with Pillow's decoders (libjpeg-turbo,
libwebp, zlib).  uint8 images come from the processor's own ``process_image`` / ``resize`` / ``center_crop``
methods, and are checked against the processor's full ``__call__`` output.

JPEG fixtures cover every sampling layout (4:4:4, 4:2:2, 4:2:0, 4:4:0, 4:1:1), progressive, greyscale, CMYK (with
and without the Adobe marker), YCCK, restart intervals, odd sizes, EXIF orientation, an ICC profile, corrupt scan
data, and two real photos shipped by scikit-learn (``sklearn/datasets/images``, CC BY 2.0, provenance in the
manifest).  Each JPEG case records the CRC-32 of Pillow's decoded RGB (``decoded``).

Usage (a venv with pillow numpy safetensors transformers scikit-learn simplejpeg):
    python scripts/make_image_fixtures.py
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import PIL.features
import PIL.ImageOps
from PIL import Image
from safetensors.numpy import save_file

import transformers
from transformers import CLIPImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "images"
INPUTS = ROOT / "inputs"
BAD = ROOT / "bad"
CONFIGS = ROOT / "configs"


# --------------------------------------------------------------------------------------------------------------------
# synthetic content


def synth(w: int, h: int, seed: int, noise: float = 3.0, posterize: int = 1) -> np.ndarray:
    """Photo-like RGB content: smooth gradients, hard edges, a thin-stripe patch and a little noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    xn = x / max(w - 1, 1)
    yn = y / max(h - 1, 1)
    r = 128 + 100 * np.sin(2 * np.pi * (1.3 * xn + 0.4 * yn) + seed)
    g = 128 + 100 * np.cos(2 * np.pi * (0.7 * xn - 1.1 * yn) + 0.5 * seed)
    b = 255 * (xn * (1 - yn)) ** 0.8
    img = np.stack([r, g, b], -1)
    # hard-edged rectangle and disc (overshoot / clipping for bicubic and lanczos)
    img[h // 5 : h // 2 + 1, w // 6 : w // 3 + 1] = [250, 15, 30]
    disc = (x - 0.65 * w) ** 2 + (y - 0.6 * h) ** 2 < (0.18 * min(w, h)) ** 2
    img[disc] = [5, 210, 60]
    # alternating one-pixel stripes (aliasing / ringing) in the lower-left corner
    sy, sx = slice(int(0.7 * h), h), slice(0, max(1, w // 4))
    stripes = ((x[sy, sx].astype(int) // 1 + y[sy, sx].astype(int) // 3) % 2) * 255.0
    img[sy, sx] = stripes[..., None]
    if noise:
        img = img + rng.normal(0, noise, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if posterize > 1:
        img = (img // posterize) * posterize
    return img


def alpha_plane(w: int, h: int, seed: int) -> np.ndarray:
    """Alpha with fully transparent, fully opaque and graded regions."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a = 255 * (x / max(w - 1, 1))
    a[: h // 4] = 0
    a[h // 4 : h // 2, : w // 3] = 255
    rng = np.random.default_rng(seed + 100)
    a[h // 2 :] = rng.integers(0, 256, a[h // 2 :].shape)
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------------------
# minimal PNG writer (Pillow cannot write 16-bit RGB/RGBA/LA PNGs or an RGB tRNS colour key)


def write_png(path: Path, arr: np.ndarray, bitdepth: int, colortype: int, extra_chunks=()) -> None:
    h, w = arr.shape[:2]
    raw = arr.astype(">u2").tobytes() if bitdepth == 16 else arr.astype(np.uint8).tobytes()
    stride = len(raw) // h
    data = b"".join(b"\x00" + raw[i * stride : (i + 1) * stride] for i in range(h))

    def chunk(tag: bytes, payload: bytes) -> bytes:
        c = struct.pack(">I", len(payload)) + tag + payload
        return c + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)

    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bitdepth, colortype, 0, 0, 0))
    for tag, payload in extra_chunks:
        out += chunk(tag, payload)
    out += chunk(b"IDAT", zlib.compress(data, 9)) + chunk(b"IEND", b"")
    path.write_bytes(out)


def png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR claims w x h RGB but whose IDAT holds almost nothing."""

    def chunk(tag: bytes, payload: bytes) -> bytes:
        c = struct.pack(">I", len(payload)) + tag + payload
        return c + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------------------------------
# inputs


SKLEARN_IMAGES = "sklearn/datasets/images"
# Real photos from a PyPI package (scikit-learn's sample images), committed unchanged.
PHOTOS = {
    "photo_china_640x427.jpg": ("china.jpg", "flickr.com/photos/danielbuechele/6061409035, CC BY 2.0"),
    "photo_flower_640x427.jpg": ("flower.jpg", "flickr.com/photos/vultilion/6056698931, CC BY 2.0"),
}


# max |Δ| of the uint8 image after resize + crop (any config) between zune-jpeg 0.5.15 (feature `pure-rust-jpeg`)
# and Pillow, measured by `cargo test --no-default-features --features pure-rust-jpeg --test image_processor -- \
# --nocapture lossy`; the default libjpeg-turbo path is exact (0) on all of them.
PURE_RUST_BOUND = {
    "jpeg_444_300x200.jpg": 1, "jpeg_422_300x200.jpg": 2, "jpeg_420_300x200.jpg": 2, "jpeg_440_300x200.jpg": 1,
    "jpeg_411_300x200.jpg": 1, "jpeg_prog_300x200.jpg": 2, "jpeg_1000x700.jpg": 2, "jpeg_gray_300x200.jpg": 1,
    "jpeg_gray_prog_75x51.jpg": 1, "jpeg_cmyk_160x120.jpg": 1, "jpeg_cmyk_noadobe_160x120.jpg": 1,
    "jpeg_ycck_160x120.jpg": 1, "jpeg_restart_300x200.jpg": 2, "jpeg_restart_prog_300x200.jpg": 2,
    "jpeg_420_1x1.jpg": 0, "jpeg_420_7x13.jpg": 4, "jpeg_420_101x67.jpg": 3, "jpeg_422_37x29.jpg": 3,
    "jpeg_420_prog_75x51.jpg": 3, "jpeg_444_17x3.jpg": 1, "jpeg_exif6_120x80.jpg": 3, "jpeg_icc_120x90.jpg": 3,
    "jpeg_corrupt_scan_300x200.jpg": 2, "photo_china_640x427.jpg": 1, "photo_flower_640x427.jpg": 2,
}


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of every marker segment before SOS (start at the 0xFF, end past the payload)."""
    out, i = [], 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        out.append((marker, i, i + 2 + length))
        if marker == 0xDA:
            break
        i += 2 + length
    return out


def without_segment(data: bytes, marker: int) -> bytes:
    for m, a, b in jpeg_segments(data):
        if m == marker:
            return data[:a] + data[b:]
    raise ValueError(f"no marker {marker:#x}")


def ycck_jpeg(w: int, h: int, seed: int) -> bytes:
    """A YCCK JPEG (Adobe transform 2), which Pillow cannot write: store Y, Cb, Cr (of a photo) and K as the four
    channels of a CMYK save, then flip the Adobe marker's transform byte from 0 (CMYK) to 2 (YCCK)."""
    ycc = np.asarray(Image.fromarray(synth(w, h, seed), "RGB").convert("YCbCr"))
    k = (np.arange(w)[None, :] * 255 // max(w - 1, 1)).repeat(h, 0).astype(np.uint8)
    stored = np.concatenate([ycc, k[..., None] // 3], -1)
    buf = io.BytesIO()
    # Pillow writes CMYK inverted (rawmode CMYK;I), so hand it 255 - stored
    Image.fromarray(255 - stored, "CMYK").save(buf, "JPEG", quality=92)
    data = bytearray(buf.getvalue())
    for m, a, _ in jpeg_segments(bytes(data)):
        if m == 0xEE and data[a + 4 : a + 9] == b"Adobe":
            assert data[a + 15] == 0, data[a + 15]
            data[a + 15] = 2
            return bytes(data)
    raise ValueError("no Adobe marker")


def make_jpegs(add_kw: dict) -> list[dict]:
    """Every JPEG layout the decoder must reproduce bit for bit."""
    import simplejpeg  # libjpeg-turbo encoder with 4:4:0 / 4:1:1 sampling, which Pillow cannot write
    from PIL import ImageCms

    cases: list[dict] = []

    def add(name: str, **extra):
        bound = PURE_RUST_BOUND[name]
        cases.append({"name": name, "file": f"inputs/{name}", "exact": True, "pure_rust_bound": bound,
                      **add_kw, **extra})

    def save(name: str, arr: np.ndarray, mode: str = "RGB", **kw):
        Image.fromarray(arr, "RGB").convert(mode).save(INPUTS / name, "JPEG", **kw)

    photo = synth(300, 200, 17)
    save("jpeg_444_300x200.jpg", photo, quality=95, subsampling=0)
    add("jpeg_444_300x200.jpg")
    save("jpeg_422_300x200.jpg", photo, quality=90, subsampling=1)
    add("jpeg_422_300x200.jpg")
    save("jpeg_420_300x200.jpg", photo, quality=90, subsampling=2)
    add("jpeg_420_300x200.jpg")
    (INPUTS / "jpeg_440_300x200.jpg").write_bytes(
        simplejpeg.encode_jpeg(np.ascontiguousarray(photo), quality=90, colorsubsampling="440"))
    add("jpeg_440_300x200.jpg", encoder=f"simplejpeg {simplejpeg.__version__}")
    (INPUTS / "jpeg_411_300x200.jpg").write_bytes(
        simplejpeg.encode_jpeg(np.ascontiguousarray(photo), quality=90, colorsubsampling="411"))
    add("jpeg_411_300x200.jpg", encoder=f"simplejpeg {simplejpeg.__version__}")
    save("jpeg_prog_300x200.jpg", photo, quality=85, progressive=True)
    add("jpeg_prog_300x200.jpg")
    save("jpeg_1000x700.jpg", synth(1000, 700, 18, noise=1.5), quality=80)
    add("jpeg_1000x700.jpg")
    save("jpeg_gray_300x200.jpg", photo, "L", quality=90)
    add("jpeg_gray_300x200.jpg")
    save("jpeg_gray_prog_75x51.jpg", synth(75, 51, 40), "L", quality=90, progressive=True)
    add("jpeg_gray_prog_75x51.jpg")
    save("jpeg_cmyk_160x120.jpg", synth(160, 120, 19), "CMYK", quality=95)
    add("jpeg_cmyk_160x120.jpg")
    cmyk = (INPUTS / "jpeg_cmyk_160x120.jpg").read_bytes()
    (INPUTS / "jpeg_cmyk_noadobe_160x120.jpg").write_bytes(without_segment(cmyk, 0xEE))
    add("jpeg_cmyk_noadobe_160x120.jpg")
    (INPUTS / "jpeg_ycck_160x120.jpg").write_bytes(ycck_jpeg(160, 120, 41))
    add("jpeg_ycck_160x120.jpg")
    # restart intervals: every 7 MCUs (baseline 4:2:0) and every MCU row (progressive)
    save("jpeg_restart_300x200.jpg", photo, quality=90, restart_marker_blocks=7)
    add("jpeg_restart_300x200.jpg")
    save("jpeg_restart_prog_300x200.jpg", photo, quality=90, progressive=True, restart_marker_rows=1)
    add("jpeg_restart_prog_300x200.jpg")
    # odd sizes: 1x1, 7x13, widths that are not a multiple of the 16-pixel MCU
    for (w, h, sub, prog, seed) in [(1, 1, 2, False, 42), (7, 13, 2, False, 43), (101, 67, 2, False, 44),
                                    (37, 29, 1, False, 45), (75, 51, 2, True, 46), (17, 3, 0, False, 47)]:
        name = f"jpeg_{['444', '422', '420'][sub]}{'_prog' if prog else ''}_{w}x{h}.jpg"
        save(name, synth(w, h, seed), quality=90, subsampling=sub, progressive=prog)
        add(name)
    # EXIF orientation 6 (rotate 90 CW on display); the processor ignores it unless asked
    exif = Image.Exif()
    exif[0x0112] = 6
    save("jpeg_exif6_120x80.jpg", synth(120, 80, 20), quality=95, exif=exif)
    add("jpeg_exif6_120x80.jpg")
    # an embedded ICC profile: Pillow keeps it in info["icc_profile"] and CLIPImageProcessorPil ignores it
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    icc = icc[:24] + bytes(12) + icc[36:]  # zero the header's creation date: a deterministic file
    save("jpeg_icc_120x90.jpg", synth(120, 90, 48), quality=90, icc_profile=icc)
    add("jpeg_icc_120x90.jpg")
    # garbage in the entropy-coded data: libjpeg warns ("Corrupt JPEG data") and Pillow decodes anyway
    good = bytearray((INPUTS / "jpeg_420_300x200.jpg").read_bytes())
    sos = [b for m, _, b in jpeg_segments(bytes(good)) if m == 0xDA][0]
    good[sos + 2000 : sos + 2040] = bytes((i * 73 + 11) % 255 for i in range(40))
    (INPUTS / "jpeg_corrupt_scan_300x200.jpg").write_bytes(bytes(good))
    add("jpeg_corrupt_scan_300x200.jpg")
    # real photos from PyPI
    import sklearn

    src_dir = Path(sklearn.__file__).parent / "datasets" / "images"
    for name, (src, licence) in PHOTOS.items():
        (INPUTS / name).write_bytes((src_dir / src).read_bytes())
        add(name, source=f"scikit-learn {sklearn.__version__}: {SKLEARN_IMAGES}/{src}", licence=licence)
    return cases


def make_inputs() -> list[dict]:
    INPUTS.mkdir(parents=True, exist_ok=True)
    cases: list[dict] = []

    def add(name: str, kind: str, exact: bool = True, **extra):
        cases.append({"name": name, "file": f"inputs/{name}", "kind": kind, "exact": exact, **extra})

    # --- PNG, RGB, many sizes / aspects
    for w, h, seed in [(200, 150, 1), (150, 200, 2), (48, 48, 3), (56, 56, 4), (40, 30, 5), (33, 97, 6), (13, 9, 7)]:
        name = f"rgb_{w}x{h}.png"
        Image.fromarray(synth(w, h, seed), "RGB").save(INPUTS / name, optimize=True)
        add(name, "png")
    # large, posterized so the PNG stays small
    big = synth(1000, 700, 8, noise=0, posterize=16)
    Image.fromarray(big, "RGB").save(INPUTS / "rgb_1000x700.png", optimize=True)
    add("rgb_1000x700.png", "png")

    # --- PNG modes
    base = synth(120, 90, 9)
    Image.fromarray(base, "RGB").convert("L").save(INPUTS / "l_120x90.png")
    add("l_120x90.png", "png")
    la = np.stack([synth(90, 120, 10)[..., 0], alpha_plane(90, 120, 10)], -1)
    Image.fromarray(la, "LA").save(INPUTS / "la_90x120.png")
    add("la_90x120.png", "png")
    rgba = np.concatenate([synth(128, 96, 11), alpha_plane(128, 96, 11)[..., None]], -1)
    Image.fromarray(rgba, "RGBA").save(INPUTS / "rgba_128x96.png")
    add("rgba_128x96.png", "png")
    pal = Image.fromarray(synth(100, 80, 12), "RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    pal.save(INPUTS / "p_100x80.png")
    add("p_100x80.png", "png")
    pal_t = pal.copy()
    pal_t.info["transparency"] = 0
    pal_t.save(INPUTS / "p_trns_100x80.png", transparency=bytes([0, 128] + [255] * 62))
    add("p_trns_100x80.png", "png")
    # L with a tRNS grey key, RGB with a tRNS colour key
    lk = np.asarray(Image.fromarray(synth(70, 50, 13), "RGB").convert("L")).copy()
    lk[10:20, 10:30] = 77
    write_png(INPUTS / "l_trns_70x50.png", lk, 8, 0, [(b"tRNS", struct.pack(">H", 77))])
    add("l_trns_70x50.png", "png")
    rk = synth(70, 50, 14)
    rk[5:25, 30:60] = [10, 20, 30]
    write_png(INPUTS / "rgb_trns_70x50.png", rk, 8, 2, [(b"tRNS", struct.pack(">HHH", 10, 20, 30))])
    add("rgb_trns_70x50.png", "png")
    # 16-bit
    rng = np.random.default_rng(15)
    s16 = synth(80, 60, 15).astype(np.uint16) * 257 + rng.integers(0, 257, (60, 80, 3)).astype(np.uint16)
    write_png(INPUTS / "rgb16_80x60.png", s16, 16, 2)
    add("rgb16_80x60.png", "png")
    a16 = alpha_plane(80, 60, 16).astype(np.uint16) * 257
    write_png(INPUTS / "rgba16_80x60.png", np.concatenate([s16, a16[..., None]], -1), 16, 6)
    add("rgba16_80x60.png", "png")
    write_png(INPUTS / "la16_80x60.png", np.stack([s16[..., 1], a16], -1), 16, 4)
    add("la16_80x60.png", "png")
    # 16-bit grey: Pillow opens it as I;16 and convert("RGB") clips every value above 255 to 255.
    # Use a mix of small (<256) and large values so both sides of the clip are exercised.
    g16 = s16[..., 0].copy()
    g16[:, :40] //= 256
    write_png(INPUTS / "l16_80x60.png", g16, 16, 0)
    add("l16_80x60.png", "png")

    # --- JPEG: Pillow decodes with libjpeg-turbo, and so does the crate (default feature `libjpeg-turbo`), so these
    # are exact; `pure_rust_bound` is what the zune-jpeg fallback (`pure-rust-jpeg`) is held to instead.
    cases.extend(make_jpegs(add_kw=dict(kind="jpeg")))

    # --- WebP
    Image.fromarray(synth(200, 150, 21), "RGB").save(INPUTS / "webp_lossless_200x150.webp", lossless=True)
    add("webp_lossless_200x150.webp", "webp")
    rgba_w = np.concatenate([synth(96, 128, 22), alpha_plane(96, 128, 22)[..., None]], -1)
    Image.fromarray(rgba_w, "RGBA").save(INPUTS / "webp_lossless_rgba_96x128.webp", lossless=True, exact=True)
    add("webp_lossless_rgba_96x128.webp", "webp")
    Image.fromarray(synth(200, 150, 23), "RGB").save(INPUTS / "webp_lossy_200x150.webp", quality=90)
    add("webp_lossy_200x150.webp", "webp", exact=False)

    # --- GIF (first frame; second frame must be ignored)
    g = Image.fromarray(synth(120, 90, 24), "RGB").quantize(colors=128)
    g2 = Image.fromarray(synth(120, 90, 25), "RGB").quantize(colors=128)
    g.save(INPUTS / "gif_120x90.gif", save_all=True, append_images=[g2], duration=100, loop=0)
    add("gif_120x90.gif", "gif")
    gt = Image.fromarray(synth(90, 120, 26), "RGB").quantize(colors=32)
    gt.save(INPUTS / "gif_trns_90x120.gif", transparency=3)
    add("gif_trns_90x120.gif", "gif")

    # --- BMP
    Image.fromarray(synth(130, 70, 27), "RGB").save(INPUTS / "bmp_130x70.bmp")
    add("bmp_130x70.bmp", "bmp")
    Image.fromarray(synth(70, 130, 28), "RGB").convert("L").save(INPUTS / "bmp_l_70x130.bmp")
    add("bmp_l_70x130.bmp", "bmp")
    # 32-bit BI_RGB: Pillow ignores the 4th byte (reads BGRX)
    rgba_b = np.concatenate([synth(64, 50, 29), alpha_plane(64, 50, 29)[..., None]], -1)
    Image.fromarray(rgba_b, "RGBA").save(INPUTS / "bmp32_64x50.bmp")
    add("bmp32_64x50.bmp", "bmp")

    # --- TIFF
    Image.fromarray(synth(110, 80, 30), "RGB").save(INPUTS / "tiff_lzw_110x80.tiff", compression="tiff_lzw")
    add("tiff_lzw_110x80.tiff", "tiff")
    Image.fromarray(synth(80, 110, 31), "RGB").save(INPUTS / "tiff_raw_80x110.tif")
    add("tiff_raw_80x110.tif", "tiff")
    rgba_t = np.concatenate([synth(72, 60, 32), alpha_plane(72, 60, 32)[..., None]], -1)
    Image.fromarray(rgba_t, "RGBA").save(INPUTS / "tiff_rgba_72x60.tiff", compression="tiff_deflate")
    add("tiff_rgba_72x60.tiff", "tiff")
    Image.fromarray(synth(60, 72, 33), "RGB").convert("L").save(INPUTS / "tiff_l_60x72.tiff")
    add("tiff_l_60x72.tiff", "tiff")
    return cases


def make_bad() -> list[dict]:
    BAD.mkdir(parents=True, exist_ok=True)
    good = (INPUTS / "rgb_200x150.png").read_bytes()
    jpg = (INPUTS / "jpeg_420_300x200.jpg").read_bytes()
    bad = []
    (BAD / "empty.png").write_bytes(b"")
    bad.append({"file": "bad/empty.png", "why": "zero bytes"})
    (BAD / "text.png").write_bytes(b"this is not an image, just text renamed to .png\n" * 4)
    bad.append({"file": "bad/text.png", "why": "text with an image extension"})
    (BAD / "truncated.png").write_bytes(good[: len(good) // 2])
    bad.append({"file": "bad/truncated.png", "why": "PNG cut in half"})
    (BAD / "header_only.png").write_bytes(good[:40])
    bad.append({"file": "bad/header_only.png", "why": "PNG signature + IHDR only"})
    (BAD / "truncated.jpg").write_bytes(jpg[:300])
    bad.append({"file": "bad/truncated.jpg", "why": "JPEG cut inside the headers"})
    # cut inside the scan: Pillow (LOAD_TRUNCATED_IMAGES off) raises "image file is truncated"
    (BAD / "truncated_scan.jpg").write_bytes(jpg[: len(jpg) * 3 // 5])
    # zune-jpeg (pure-rust-jpeg) fills the missing part instead: `pure_rust_decodes`
    bad.append({"file": "bad/truncated_scan.jpg", "why": "baseline JPEG cut at 60% of its scan",
                "pure_rust_decodes": True})
    prog = (INPUTS / "jpeg_prog_300x200.jpg").read_bytes()
    (BAD / "truncated_prog.jpg").write_bytes(prog[: len(prog) * 3 // 5])
    bad.append({"file": "bad/truncated_prog.jpg", "why": "progressive JPEG cut after some of its scans",
                "pure_rust_decodes": True})
    (BAD / "empty.jpg").write_bytes(b"")
    bad.append({"file": "bad/empty.jpg", "why": "zero bytes named .jpg"})
    (BAD / "text.jpg").write_bytes(b"not a JPEG either, only text with a .jpg name\n" * 4)
    bad.append({"file": "bad/text.jpg", "why": "text with a .jpg extension"})
    (BAD / "soi_only.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    bad.append({"file": "bad/soi_only.jpg", "why": "SOI + EOI, no image"})
    dqt = bytearray(jpg)
    sof = jpg.find(b"\xff\xc0")
    dqt[sof + 9] = 7  # 7 components
    (BAD / "seven_components.jpg").write_bytes(bytes(dqt))
    bad.append({"file": "bad/seven_components.jpg", "why": "SOF0 claims 7 components"})
    corrupt = bytearray(good)
    corrupt[60:200] = bytes((i * 37) % 256 for i in range(140))
    (BAD / "corrupt.png").write_bytes(bytes(corrupt))
    bad.append({"file": "bad/corrupt.png", "why": "PNG with garbage inside IDAT (CRC mismatch)"})
    (BAD / "giant_100000x100000.png").write_bytes(png_header_only(100000, 100000))
    bad.append({"file": "bad/giant_100000x100000.png", "why": "IHDR claims 100000x100000", "limits": True})
    # JPEG whose SOF0 claims 65000 x 65000
    sof = jpg.find(b"\xff\xc0")
    giant_jpg = bytearray(jpg)
    giant_jpg[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    (BAD / "giant_65000x65000.jpg").write_bytes(bytes(giant_jpg))
    bad.append({"file": "bad/giant_65000x65000.jpg", "why": "SOF0 claims 65000x65000", "limits": True})
    for b in bad:
        if b["file"].endswith(".jpg"):
            try:
                with Image.open(ROOT / b["file"]) as im:
                    im.load()
            except Exception as e:  # noqa: BLE001 - any Pillow error is what we want
                b["pillow"] = f"{type(e).__name__}: {e}".replace(str(ROOT) + "/", "")
            else:
                raise AssertionError(f"Pillow opened {b['file']}")
    return bad


# --------------------------------------------------------------------------------------------------------------------
# processor configs (preprocessor_config.json forms)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# configs used to compute expected outputs: name -> (kwargs, which images)
RUN_CONFIGS = {
    # CLIP-like, small: every image
    "a_se56_c48_bicubic": ({"size": {"shortest_edge": 56}, "crop_size": {"height": 48, "width": 48}, "resample": 3}, "all"),
    # fixed height/width (aspect ignored), crop taller than the resized image -> zero padding rows
    "b_hw_bilinear": ({"size": {"height": 40, "width": 60}, "crop_size": {"height": 48, "width": 36}, "resample": 2}, "png"),
    # shortest_edge + longest_edge (get_size_with_aspect_ratio), int crop_size
    "c_se_le_lanczos": ({"size": {"shortest_edge": 40, "longest_edge": 52}, "crop_size": 44, "resample": 1}, "png"),
    # no resize: pure crop / pad
    "d_noresize": ({"do_resize": False, "crop_size": {"height": 36, "width": 52}}, "png"),
    # int size (-> shortest_edge, CLIP is default_to_square=False), nearest, no normalize
    "e_nearest_int": ({"size": 45, "crop_size": 40, "resample": 0, "do_normalize": False}, "png"),
    # max_height/max_width, box filter, custom mean/std
    "f_box_maxhw": (
        {
            "size": {"max_height": 50, "max_width": 50},
            "crop_size": 50,
            "resample": 4,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
        },
        "png",
    ),
    # hamming, no rescale (normalize raw 0..255 values), odd crop
    "g_hamming_norescale": (
        {"size": {"shortest_edge": 33}, "crop_size": {"height": 31, "width": 29}, "resample": 5, "do_rescale": False},
        "png",
    ),
    # the real CLIP / AltCLIP config, 224
    "clip224": ({}, ["rgb_1000x700.png", "jpeg_1000x700.jpg", *PHOTOS]),
}

# images whose final pixel_values are stored in full for config a (everything else is checked through norm_table)
PV_IMAGES = {"rgb_200x150.png", "rgba_128x96.png", "rgb_13x9.png", "l16_80x60.png", "p_trns_100x80.png",
             "jpeg_420_300x200.jpg", "jpeg_cmyk_160x120.jpg", "jpeg_ycck_160x120.jpg", *PHOTOS}

# preprocessor_config.json forms for the parsing tests
JSON_CONFIGS = {
    "openai_clip_legacy": {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "resample": 3,
        "size": 224,
    },
    "altclip_hub": {
        "crop_size": {"height": 224, "width": 224},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": CLIP_STD,
        "processor_class": "AltCLIPProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 224},
    },
    "empty_defaults": {},
    "hw_bilinear": {"size": {"height": 336, "width": 224}, "crop_size": [200, 180], "resample": 2},
    "se_le": {"size": {"shortest_edge": 800, "longest_edge": 1333}, "do_center_crop": False, "resample": 1},
    "max_hw_nearest": {"size": {"max_height": 512, "max_width": 384}, "resample": 0, "do_convert_rgb": False},
    "list_size_box": {"size": [300, 200], "crop_size": 150, "resample": 4, "rescale_factor": 0.5},
    "scalar_mean_hamming": {"image_mean": 0.5, "image_std": 0.25, "resample": 5, "do_rescale": False},
    "nulls": {"size": None, "crop_size": None, "resample": None, "image_mean": None, "do_normalize": None},
}
# configs transformers accepts but the PIL backend cannot run, or rejects outright -> typed errors in Rust
BAD_JSON_CONFIGS = {
    "bad_resample_mks": {"resample": 6},
    "bad_resample_99": {"resample": 99},
    "bad_size_keys": {"size": {"width": 10}},
    "bad_size_longest_only": {"size": {"longest_edge": 300}},
    "bad_size_zero": {"size": {"shortest_edge": 0}},
    "bad_mean_len": {"image_mean": [0.5, 0.5]},
    "bad_std_zero": {"image_std": [0.5, 0.0, 0.5]},
    "bad_crop_dict": {"crop_size": {"shortest_edge": 10}},
    "bad_json": "{ not json",
}


def resolved(p: CLIPImageProcessorPil) -> dict:
    def sd(s):
        return None if s is None else {k: v for k, v in dict(s).items()}

    mean = p.image_mean
    std = p.image_std
    return {
        "do_resize": bool(p.do_resize),
        "size": sd(p.size),
        "resample": int(p.resample),
        "do_center_crop": bool(p.do_center_crop),
        "crop_size": sd(p.crop_size),
        "do_rescale": bool(p.do_rescale),
        "rescale_factor": float(p.rescale_factor),
        "do_normalize": bool(p.do_normalize),
        "image_mean": [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)],
        "image_std": [float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)],
        "do_convert_rgb": bool(p.do_convert_rgb),
    }


def make_configs() -> None:
    CONFIGS.mkdir(parents=True, exist_ok=True)
    for name, cfg in JSON_CONFIGS.items():
        (CONFIGS / f"{name}.json").write_text(json.dumps(cfg, indent=2) + "\n")
        p = CLIPImageProcessorPil(**{k: v for k, v in cfg.items() if v is not None})
        (CONFIGS / f"{name}.expected.json").write_text(json.dumps(resolved(p), indent=2) + "\n")
    for name, cfg in BAD_JSON_CONFIGS.items():
        text = cfg if isinstance(cfg, str) else json.dumps(cfg, indent=2) + "\n"
        (CONFIGS / f"{name}.json").write_text(text)


# --------------------------------------------------------------------------------------------------------------------
# expected outputs


def reference(p: CLIPImageProcessorPil, image) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 CHW after convert/resize/crop, float32 CHW pixel_values), via the processor's own steps."""
    x = p.process_image(image, do_convert_rgb=p.do_convert_rgb)
    if p.do_resize:
        x = p.resize(x, size=p.size, resample=p.resample)
    if p.do_center_crop:
        x = p.center_crop(x, p.crop_size)
    assert x.dtype == np.uint8, x.dtype
    u8 = np.ascontiguousarray(x)
    full = p(image, return_tensors="np")["pixel_values"][0]
    y = u8
    if p.do_rescale:
        y = p.rescale(y, p.rescale_factor)
    if p.do_normalize:
        y = p.normalize(y, p.image_mean, p.image_std)
    assert np.array_equal(np.asarray(y, dtype=np.float32), np.asarray(full, dtype=np.float32)), "step mismatch"
    return u8, np.asarray(full, dtype=np.float32)


def norm_table(p: CLIPImageProcessorPil) -> np.ndarray:
    levels = np.broadcast_to(np.arange(256, dtype=np.uint8), (3, 1, 256)).copy()
    y = levels
    if p.do_rescale:
        y = p.rescale(y, p.rescale_factor)
    if p.do_normalize:
        y = p.normalize(y, p.image_mean, p.image_std)
    return np.ascontiguousarray(np.asarray(y, dtype=np.float32)[:, 0, :])


def main() -> None:
    cases = make_inputs()
    bad = make_bad()
    make_configs()

    manifest = {
        "generator": "scripts/make_image_fixtures.py",
        "versions": {
            "pillow": PIL.__version__,
            "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
        "images": cases,
        "bad": bad,
        "configs": {},
        "extra": {},
    }
    for cname, (kwargs, which) in RUN_CONFIGS.items():
        p = CLIPImageProcessorPil(**kwargs)
        tensors = {"norm_table": norm_table(p)}
        names = []
        for case in cases:
            n = case["name"]
            if which == "all" or (which == "png" and case["kind"] == "png") or (isinstance(which, list) and n in which):
                with Image.open(ROOT / case["file"]) as im:
                    u8, pv = reference(p, im)
                tensors[f"{n}.u8"] = u8
                if n in PV_IMAGES and cname == "a_se56_c48_bicubic":
                    tensors[f"{n}.pv"] = pv
                names.append(n)
        # raw RGBA pixel buffer input goes through transformers' numpy path (float blend + np.round), unlike PIL RGBA
        if cname == "a_se56_c48_bicubic":
            with Image.open(INPUTS / "rgba_128x96.png") as im:
                arr = np.asarray(im.convert("RGBA")).copy()
            u8, pv = reference(p, arr)
            tensors["raw_rgba_128x96.u8"] = u8
            tensors["raw_rgba_128x96.pv"] = pv
            # EXIF-aware path (transformers.image_utils.load_image applies exif_transpose)
            with Image.open(INPUTS / "jpeg_exif6_120x80.jpg") as im:
                rot = PIL.ImageOps.exif_transpose(im)
                u8, _ = reference(p, rot)
            tensors["jpeg_exif6_120x80.jpg.exif.u8"] = u8
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(ROOT / f"expected_{cname}.safetensors"))
        manifest["configs"][cname] = {"kwargs": kwargs, "images": names}

    # decoder-level references for the lossy formats (Pillow's decoded RGB), used to measure decoder differences
    # (tests read it when present: `cargo test --test image_processor -- --nocapture decoder_report`)
    dec = {}
    for case in cases:
        if not case["exact"] or case["kind"] == "jpeg":
            with Image.open(ROOT / case["file"]) as im:
                dec[case["name"]] = np.asarray(im.convert("RGB")).copy()
        if case["kind"] == "jpeg":
            # committed decoder-level reference: Pillow's decoded RGB (Image.open -> convert("RGB")), as a CRC-32
            rgb = dec[case["name"]]
            case["decoded"] = {"shape": list(rgb.shape), "crc32": zlib.crc32(rgb.tobytes())}
    out = ROOT.parent.parent.parent / "scripts" / "out"
    out.mkdir(parents=True, exist_ok=True)
    save_file(dec, str(out / "decoded_lossy.safetensors"))  # not committed (scripts/out is ignored)

    # raw Pillow resizes of a noise image: every filter, up/down/mixed scales, both pass orders
    rng = np.random.default_rng(99)
    noise = rng.integers(0, 256, (29, 37, 3)).astype(np.uint8)
    grid = {"input": noise}
    sizes = [(10, 7), (37, 10), (12, 29), (50, 40), (74, 58), (20, 50), (60, 8), (5, 61), (36, 28), (38, 30),
             (1, 1), (3, 29), (37, 3), (80, 20), (30, 2)]
    for code in range(6):
        for w, h in sizes:
            grid[f"{code}/{w}x{h}"] = np.asarray(Image.fromarray(noise, "RGB").resize((w, h), code))
    save_file(grid, str(ROOT / "expected_resize.safetensors"))
    manifest["resize_grid"] = {"filters": list(range(6)), "sizes": sizes}

    (ROOT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(f.stat().st_size for f in ROOT.rglob("*") if f.is_file())
    print(f"wrote {len(cases)} images, {len(bad)} bad files, {len(RUN_CONFIGS)} configs; {total / 1e6:.2f} MB total")


if __name__ == "__main__":
    main()
