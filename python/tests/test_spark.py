"""examples/python/spark_embed.py on `local[2]` with the tiny fixture model: its Parquet equals the single-process
`embed --format parquet` output row for row. Skips when pyspark or Java is missing."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install -r python/requirements-ray.txt)")
if shutil.which("java") is None or subprocess.run(["java", "-version"], capture_output=True).returncode != 0:
    pytest.skip("Java is missing: Spark needs a JRE (17 or 21) on PATH", allow_module_level=True)

import job_fixtures  # noqa: E402
import spark_embed  # noqa: E402
from embed_job import EmbedConfig, collect_images  # noqa: E402


@pytest.fixture(scope="module")
def spark():
    session = spark_embed.session("local[2]", batch_size=8)
    yield session
    session.stop()


def test_rows_equal_the_embed_tool(spark, tmp_path):
    images = job_fixtures.make_image_dir(tmp_path)
    reference = job_fixtures.embed_reference(images, tmp_path / "embed.parquet")
    paths = collect_images([images])
    config = EmbedConfig(model=str(job_fixtures.MODEL_DIR), batch_size=8)
    summary = spark_embed.embed_to_parquet(spark, paths, str(tmp_path / "out"), config)
    got = job_fixtures.read_rows(tmp_path / "out")
    job_fixtures.assert_same_rows(got, reference, paths)
    assert job_fixtures.error_names(got) == sorted(job_fixtures.CORRUPT)
    assert (summary.rows, summary.error_rows) == (len(paths), len(job_fixtures.CORRUPT))
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) >= 2, "local[2] should give two partitions"
    print(f"\nspark_embed on {len(paths)} images: {summary}")


def test_main_refuses_a_non_empty_output(tmp_path):
    (tmp_path / "old.parquet").write_bytes(b"")
    argv = ["--model-dir", str(job_fixtures.MODEL_DIR), "--images", str(job_fixtures.REPO / "examples" / "images")]
    with pytest.raises(FileExistsError, match="not empty"):
        spark_embed.main(argv + ["--output", str(tmp_path), "--master", "local[2]"])
