"""What test_ray.py and test_spark.py share: a directory of 200+ images (bundled, fixtures, generated, corrupt),
the single-process `embed --format parquet` reference output, and the row-for-row comparison."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "python"
MODEL_DIR = REPO / "tests" / "fixtures" / "tiny_full"
GENERATED = 150
# Files with image names that no decoder can read: each must come back as one error row.
CORRUPT = ("corrupt_truncated.png", "corrupt_random.jpg", "corrupt_empty.webp", "corrupt_text.gif")
# A name with glob characters and a percent escape: kept literally, not matched or decoded.
ODD_NAME = "odd [1] {x} %41 *.png"

sys.path.insert(0, str(EXAMPLES))


def make_image_dir(root: Path) -> Path:
    """Writes the test images under `root/images`: the bundled photos, the decoder fixtures, GENERATED PIL images
    (PNG, JPEG, BMP and WebP, some with upper-case extensions, some in a subdirectory), one under ODD_NAME, the
    CORRUPT files, and a text file the walk must skip."""
    from PIL import Image

    out = root / "images"
    (out / "generated" / "nested").mkdir(parents=True)
    for src in sorted((REPO / "examples" / "images").glob("*.png")):
        shutil.copy(src, out / f"bundled_{src.name}")
    for src in sorted((REPO / "tests" / "fixtures" / "images" / "inputs").iterdir()):
        shutil.copy(src, out / f"fixture_{src.name}")
    rng = np.random.default_rng(13)
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("webp", "WEBP"), ("PNG", "PNG"), ("JPEG", "JPEG")]
    for i in range(GENERATED):
        w, h = (int(v) for v in rng.integers(8, 200, 2))
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ext, fmt = formats[i % len(formats)]
        sub = out / "generated" / ("nested" if i % 5 == 0 else "")
        Image.fromarray(pixels).save(sub / f"gen_{i:03d}.{ext}", format=fmt)
    png = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(png, format="PNG")
    (out / ODD_NAME).write_bytes(png.getvalue())
    corrupt = [
        png.getvalue()[: len(png.getvalue()) // 2],
        np.random.default_rng(7).bytes(3000),
        b"",
        b"this is not an image\n",
    ]
    for name, data in zip(CORRUPT, corrupt, strict=True):
        (out / name).write_bytes(data)
    (out / "notes.txt").write_text("not an image: the walk skips it\n")
    return out


def embed_bin() -> Path:
    """The Rust `embed` example binary: ALTCLIP_EMBED_BIN, else the dev build under CARGO_TARGET_DIR (default
    <repo>/target); a failure that says how to build it when missing."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = Path(os.environ.get("ALTCLIP_EMBED_BIN", target / "debug" / "examples" / "embed"))
    if not path.is_file():
        raise AssertionError(
            f"{path}: the embed binary is missing; build it with `cargo build --example embed --features parquet` "
            "(or point ALTCLIP_EMBED_BIN at one)"
        )
    return path


def embed_reference(image_dir: Path, output: Path) -> pa.Table:
    """Runs the single-process `embed --format parquet` over `image_dir` and reads its rows."""
    cmd = [str(embed_bin()), "--model-dir", str(MODEL_DIR), "--image", str(image_dir)]
    cmd += ["--format", "parquet", "--output", str(output), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
    return pq.read_table(output)


def read_rows(output_dir: Path) -> pa.Table:
    """All rows of the Parquet files a job wrote under `output_dir`, with the first file's schema metadata."""
    files = sorted(output_dir.glob("**/*.parquet"))
    assert files, f"no Parquet files under {output_dir}"
    table = pyarrow.dataset.dataset([str(f) for f in files], format="parquet").to_table()
    return table.replace_schema_metadata(pq.read_schema(files[0]).metadata)


def assert_schema(table: pa.Table, dim: int) -> None:
    """The `embed --format parquet` schema: path utf8 not null, embedding fixed_size_list<float32 not null, dim>,
    error utf8. (The list's item name is left alone: Parquet readers may rename it.)"""
    schema = table.schema
    assert schema.names == ["path", "embedding", "error"], schema
    assert [(f.type, f.nullable) for f in (schema.field("path"), schema.field("error"))] == [
        (pa.string(), False),
        (pa.string(), True),
    ], schema
    emb = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb) and emb.list_size == dim, emb
    assert (emb.value_type, emb.value_field.nullable) == (pa.float32(), False), emb


def assert_same_rows(got: pa.Table, want: pa.Table, expected_paths: list[str]) -> None:
    """`got` has one row per expected path, no more, and each equals `want`'s row for that path: embeddings within
    1e-6, an error row (null embedding, non-null error) exactly where `want` has one. Schema and metadata agree."""
    want_meta = want.schema.metadata or {}
    dim = int(want_meta[b"dim"])
    assert_schema(got, dim)
    assert_schema(want, dim)
    got_meta = got.schema.metadata or {}
    assert (got_meta.get(b"model"), got_meta.get(b"dim")) == (want_meta[b"model"], want_meta[b"dim"])
    got_paths = got.column("path").to_pylist()
    assert len(got_paths) == len(set(got_paths)), "duplicate rows: " + str(
        sorted({p for p in got_paths if got_paths.count(p) > 1})
    )
    assert sorted(got_paths) == sorted(expected_paths)
    assert sorted(want.column("path").to_pylist()) == sorted(expected_paths)
    got_by_path = _rows_by_path(got)
    for path, (emb, err) in _rows_by_path(want).items():
        g_emb, g_err = got_by_path[path]
        assert (g_err is None, g_emb is None) == (err is None, emb is None), (path, g_err, err)
        assert (err is None) == (emb is not None), f"{path}: reference row has both or neither of embedding and error"
        if emb is not None:
            np.testing.assert_allclose(np.asarray(g_emb, np.float32), np.asarray(emb, np.float32), rtol=0, atol=1e-6)


def _rows_by_path(table: pa.Table) -> dict[str, tuple[list[float] | None, str | None]]:
    cols = [table.column(c).to_pylist() for c in ("path", "embedding", "error")]
    return {p: (e, err) for p, e, err in zip(*cols, strict=True)}


def error_names(table: pa.Table) -> list[str]:
    """The file names of the error rows, sorted."""
    rows = zip(table.column("path").to_pylist(), table.column("error").to_pylist(), strict=True)
    return sorted(os.path.basename(p) for p, err in rows if err is not None)
