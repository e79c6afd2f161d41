"""Embeds a directory of images with PySpark: binaryFile source, `mapInArrow`, one `altclip.Embedder` per Python
worker process, Parquet out with the rows and schema of `embed --format parquet` (see embed_job.py).

Spark has no fixed_size_list type, so each task writes its partition's Parquet file itself (pyarrow, the exact
schema), first under a temporary name and then renamed to `part-<partition>.parquet`: a retried task replaces its
file instead of adding rows. Spark names files by URI; rows carry them as absolute local paths.

    python examples/python/spark_embed.py --model-dir tests/fixtures/tiny_full --images examples/images \\
        --output out/ --master 'local[2]' --batch-size 16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import embed_job  # noqa: E402
from embed_job import EmbedConfig, Summary  # noqa: E402

# One Embedder per Python worker process, kept across tasks (Spark reuses its Python workers).
_EMBEDDERS: dict[EmbedConfig, object] = {}

_WRITTEN = pa.schema([("file", pa.string()), ("rows", pa.int64())])


def embedder(config: EmbedConfig):
    """This process's Embedder for `config`, loaded on first use with as many threads as a task has CPUs
    (`spark.task.cpus`)."""
    from pyspark import TaskContext

    if config not in _EMBEDDERS:
        _EMBEDDERS[config] = config.load(TaskContext.get().cpus())
    return _EMBEDDERS[config]


def local_path(uri: str) -> str:
    """Spark's `file:/a b/c.png` (Hadoop's form: not percent-encoded) as the path `/a b/c.png`; other schemes stay
    URIs."""
    for prefix in ("file://", "file:"):
        if uri.startswith(prefix):
            return uri[len(prefix) :]
    return uri


def embed_partition(batches, config: EmbedConfig, output: str):
    """The `mapInArrow` function: embeds this partition's binaryFile rows (`path`, `content`), `config.batch_size`
    at a time, into one Parquet file under `output`, and yields one row naming the file and its row count."""
    from pyspark import TaskContext

    model = embedder(config)
    final = os.path.join(output, f"part-{TaskContext.get().partitionId():05d}.parquet")
    temporary = os.path.join(output, f".{uuid.uuid4().hex}.tmp")
    rows = 0
    with pq.ParquetWriter(temporary, embed_job.output_schema(model.dim, model.name)) as writer:
        for batch in batches:
            for start in range(0, batch.num_rows, config.batch_size):
                part = batch.slice(start, config.batch_size)
                paths = [local_path(p) for p in part.column("path").to_pylist()]
                table = embed_job.embed_rows(model, paths, part.column("content").to_pylist())
                writer.write_table(table)
                rows += table.num_rows
    os.replace(temporary, final)
    yield pa.RecordBatch.from_pydict({"file": [final], "rows": [rows]}, schema=_WRITTEN)


def session(master: str, batch_size: int):
    """A SparkSession for the job: no UI, Arrow batches of one embed batch, this Python on the workers, and this
    file and embed_job.py shipped to them."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("altclip-embed")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
        .getOrCreate()
    )
    for module in (embed_job.__file__, os.path.abspath(__file__)):
        spark.sparkContext.addPyFile(module)
    return spark


def embed_to_parquet(spark, paths: list[str], output: str, config: EmbedConfig) -> Summary:
    """Embeds `paths` (image files; see `embed_job.collect_images`) into Parquet files under `output`."""
    embed_job.check_output_dir(output)
    if not paths:
        raise ValueError("no image files to embed")
    os.makedirs(output, exist_ok=True)
    start = time.perf_counter()
    written = images(spark, paths).mapInArrow(
        lambda batches: embed_partition(batches, config, output), "file string, rows long"
    )
    reported = sum(r["rows"] for r in written.collect())
    summary = Summary.of(output, time.perf_counter() - start)
    embed_job.check_one_row_each(summary, len(paths), reported)
    return summary


def hadoop_literal(path: str) -> str:
    """`path` with Hadoop's glob characters escaped, so `a[1].png` names that file rather than a pattern."""
    return "".join("\\" + c if c in "\\*?[]{}" else c for c in path)


def images(spark, paths: list[str]):
    """A DataFrame of (`path` URI, `content`) for `paths`. Spark's file sources leave out empty files, so those
    are added as rows of their own: the Embedder reports them like any other unreadable image."""
    absolute = [os.path.abspath(p) for p in paths]
    empty = [p for p in absolute if os.path.isfile(p) and os.path.getsize(p) == 0]
    files = spark.read.format("binaryFile").load([hadoop_literal(p) for p in absolute]).select("path", "content")
    if not empty:
        return files
    rows = [(f"file:{p}", bytearray()) for p in empty]
    return files.unionByName(spark.createDataFrame(rows, "path string, content binary"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    embed_job.add_embed_args(p)
    p.add_argument("--master", default="local[*]", help="Spark master URL, e.g. local[2] or spark://host:7077")
    args = p.parse_args(argv)
    config = embed_job.embed_config(args)
    paths = embed_job.collect_images(args.images)
    embed_job.check_output_dir(args.output)
    spark = session(args.master, config.batch_size)
    try:
        print(embed_to_parquet(spark, paths, args.output, config))
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
