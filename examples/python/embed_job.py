"""What the Ray and Spark jobs share: the Rust `embed` tool's directory walk and Parquet rows, the Embedder's
options, the output directory check and the end-of-job summary. `ray_embed.py` and `spark_embed.py` import this.

One row per input: `path` (utf8), `embedding` fixed_size_list<float32, dim> (null when the image failed), `error`
(utf8, null when it did not); schema metadata `model` and `dim`.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.dataset

# Mirrors `altclip::export::IMAGE_EXTENSIONS`, matched case-insensitively.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


def is_image_name(name: str) -> bool:
    """True when the file name's extension is one of IMAGE_EXTENSIONS (as `Path::extension`: `.png` has none)."""
    ext = os.path.splitext(name)[1]
    return ext[1:].lower() in IMAGE_EXTENSIONS if ext else False


def _walk(directory: str, out: list[str], seen: set[str]) -> None:
    # Mirrors `export::walk`: a directory reached twice (links) is walked once; entries sorted by their bytes, as
    # Rust sorts `PathBuf`s of one directory; `isdir` follows links.
    real = os.path.realpath(directory)
    if real in seen:
        return
    seen.add(real)
    for name in sorted(os.listdir(directory), key=os.fsencode):
        path = os.path.join(directory, name)
        if os.path.isdir(path):
            _walk(path, out, seen)
        elif is_image_name(name):
            out.append(path)


def collect_images(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Expands directories (recursively, sorted) and glob patterns into image files, as `export::collect_images`
    does; files are taken as given. A pattern that matches nothing, or an input that does not exist, raises
    FileNotFoundError naming it."""
    out: list[str] = []
    seen: set[str] = set()
    for item in map(os.fspath, inputs):
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches or not os.path.exists(matches[0]):
            raise FileNotFoundError(f"{item}: no such file, directory or matching pattern")
        for path in matches:
            if os.path.isdir(path):
                _walk(path, out, seen)
            else:
                out.append(path)
    return out


def output_schema(dim: int, model: str) -> pa.Schema:
    """The schema of the `embed --format parquet` output, with its `model` and `dim` metadata."""
    # Nullability as in the Rust Parquet writer (`altclip::export`): `path` and the list items are never null.
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("embedding", embedding_type(dim)),
        pa.field("error", pa.string()),
    ]
    return pa.schema(fields, metadata={"model": model, "dim": str(dim)})


def embedding_type(dim: int) -> pa.DataType:
    """fixed_size_list<item: float32 not null, dim>."""
    return pa.list_(pa.field("item", pa.float32(), nullable=False), dim)


def rows_table(paths: Sequence[str], embeddings: np.ndarray, errors: Sequence[str | None], model: str) -> pa.Table:
    """One row per path; the embedding is null where `errors` holds a message. The fixed_size_list is built here
    because Ray would store a 2-D numpy column as its own tensor extension type."""
    n, dim = embeddings.shape
    if len(paths) != n or len(errors) != n:
        raise ValueError(f"{len(paths)} paths, {n} embeddings and {len(errors)} errors: one each per input")
    failed = np.array([e is not None for e in errors], dtype=bool)
    values = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).reshape(-1), type=pa.float32())
    embedding = pa.FixedSizeListArray.from_arrays(values, type=embedding_type(dim), mask=pa.array(failed))
    schema = output_schema(dim, model)
    return pa.Table.from_arrays([pa.array(paths, pa.string()), embedding, pa.array(errors, pa.string())], schema=schema)


def embed_rows(embedder, paths: Sequence[str], images: Sequence[bytes]) -> pa.Table:
    """Embeds the encoded images with `altclip.Embedder.embed_images_partial`: every input gives one row, a failed
    one its error message."""
    if len(paths) != len(images):
        raise ValueError(f"{len(paths)} paths for {len(images)} images")
    if not images:
        return rows_table([], np.zeros((0, embedder.dim), np.float32), [], embedder.name)
    embeddings, errors = embedder.embed_images_partial(list(images))
    return rows_table(paths, embeddings, errors, embedder.name)


@dataclass(frozen=True)
class EmbedConfig:
    """Which model each worker loads (`altclip.Embedder`'s arguments) and how many images go into one call."""

    model: str
    batch_size: int = 16
    device: str = "cpu"
    dtype: str = "f32"
    revision: str | None = None
    quantize: str | None = None

    def load(self, threads: float):
        """A new Embedder; each worker process calls this once, before anything else in it starts rayon. Its CPU
        threads are the CPUs the engine gave the worker (`RAYON_NUM_THREADS`, at least 1, unless already set):
        rayon would otherwise start one per core in every worker on the node. The worker only embeds, so malloc
        keeps freed activations for reuse (`retain_freed_memory`)."""
        os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, math.ceil(threads))))
        import altclip

        altclip.retain_freed_memory()

        return altclip.Embedder(
            self.model, device=self.device, dtype=self.dtype, revision=self.revision, quantize=self.quantize
        )


def add_embed_args(p: argparse.ArgumentParser) -> None:
    """The command-line options both jobs take: model, images, output, batch size, device, dtype."""
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-dir", help="local model directory (config.json, weights, tokenizer)")
    model.add_argument("--model", help="hub model id, e.g. BAAI/AltCLIP")
    p.add_argument("--images", required=True, action="append", help="directory, file or glob; repeatable")
    p.add_argument("--output", required=True, help="output directory for the Parquet files (new or empty)")
    p.add_argument("--batch-size", type=int, default=16, help="images per embed call")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, metal or auto")
    p.add_argument("--dtype", default="f32", help="f32, f16 or bf16")
    p.add_argument("--revision", help="hub revision (with --model)")
    p.add_argument("--quantize", help="none, int8 (CPU), or q8_0, q6k, q5k, q4k, q4_0")


def embed_config(args: argparse.Namespace) -> EmbedConfig:
    """The EmbedConfig of parsed `add_embed_args` options."""
    if args.batch_size < 1:
        raise SystemExit("--batch-size must be at least 1")
    return EmbedConfig(
        model=args.model_dir or args.model,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        revision=args.revision,
        quantize=args.quantize,
    )


def check_output_dir(output: str) -> None:
    """Refuses a non-empty output directory: the jobs add files to it, so rows of an earlier run would be counted
    twice."""
    if os.path.isdir(output) and os.listdir(output):
        raise FileExistsError(f"{output}: output directory is not empty (rows of an earlier run would be mixed in)")


@dataclass
class Summary:
    """What a finished job wrote, counted from its Parquet files."""

    rows: int
    error_rows: int
    seconds: float

    @classmethod
    def of(cls, output: str, seconds: float) -> Summary:
        data = pyarrow.dataset.dataset(output, format="parquet")
        return cls(data.count_rows(), data.count_rows(filter=pyarrow.dataset.field("error").is_valid()), seconds)

    @property
    def images_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"{self.rows} row(s) written, {self.error_rows} error row(s), {self.seconds:.2f} s, "
            f"{self.images_per_second:.1f} images/s"
        )


def check_one_row_each(summary: Summary, inputs: int, reported: int | None = None) -> None:
    """Fails a job whose files do not hold exactly one row per input (or disagree with the rows its tasks
    reported): a dropped or doubled row is an error, never a quiet result."""
    if summary.rows != inputs or reported not in (None, summary.rows):
        told = "" if reported is None else f", its tasks reported {reported}"
        raise RuntimeError(f"the job wrote {summary.rows} rows for {inputs} inputs{told}")
