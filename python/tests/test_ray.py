"""examples/python/ray_embed.py on a real local Ray cluster (2 CPUs, 2 actors) with the tiny fixture model: its
Parquet equals the single-process `embed --format parquet` output row for row, also when a worker is SIGKILLed
mid-job."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip(
    "ray", reason="Ray cannot be imported on this platform (pip install -r python/requirements-ray.txt)"
)
pytest.importorskip("ray.data", reason="Ray Data cannot be imported (pip install -r python/requirements-ray.txt)")

import job_fixtures  # noqa: E402
import ray_embed  # noqa: E402
from embed_job import EmbedConfig, collect_images  # noqa: E402

# The actors' process title, set by Ray: `ray::MapWorker(MapBatches(EmbedBatch))`, `....submit` while embedding.
ACTOR_TITLE = "ray::MapWorker(MapBatches(EmbedBatch))"


@pytest.fixture(scope="module")
def cluster():
    # The worker processes inherit this process's environment (PYTHONPATH included), so they import altclip too.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return job_fixtures.make_image_dir(tmp_path_factory.mktemp("ray"))


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    return job_fixtures.embed_reference(images, tmp_path_factory.mktemp("ref") / "embed.parquet")


# Half a CPU per actor leaves one of the two for the read and write tasks.
JOB = ray_embed.JobConfig(num_workers=2, num_cpus_per_worker=0.5)


def embed_config(batch_size: int) -> EmbedConfig:
    return EmbedConfig(model=str(job_fixtures.MODEL_DIR), batch_size=batch_size)


def test_walk_finds_every_image_and_skips_other_files(images):
    paths = collect_images([images])
    assert len(paths) >= 200 + len(job_fixtures.CORRUPT)
    assert not any(p.endswith(".txt") for p in paths)
    assert any(p.endswith(".PNG") for p in paths) and any("/nested/" in p for p in paths)


def test_rows_equal_the_embed_tool(cluster, images, reference, tmp_path):
    paths = collect_images([images])
    assert paths == reference.column("path").to_pylist(), "the walk differs from the embed tool's"
    summary = ray_embed.embed_to_parquet(paths, str(tmp_path / "out"), embed_config(8), JOB)
    got = job_fixtures.read_rows(tmp_path / "out")
    job_fixtures.assert_same_rows(got, reference, paths)
    assert job_fixtures.error_names(got) == sorted(job_fixtures.CORRUPT)
    assert (summary.rows, summary.error_rows) == (len(paths), len(job_fixtures.CORRUPT))
    print(f"\nray_embed on {len(paths)} images: {summary}")


def test_main_prints_the_summary(cluster, images, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--model-dir", str(job_fixtures.MODEL_DIR), "--images", str(images / "generated"), "--output", str(out)]
    assert ray_embed.main(argv + ["--num-workers", "2", "--batch-size", "16", "--num-cpus-per-worker", "0.5"]) == 0
    n = len(collect_images([images / "generated"]))
    assert capsys.readouterr().out.startswith(f"{n} row(s) written, 0 error row(s), ")
    with pytest.raises(FileExistsError, match="not empty"):
        ray_embed.main(argv)


def test_refuses_actors_that_hold_every_cpu(cluster, images, tmp_path):
    # Two 1-CPU actors on two CPUs leave none for the read tasks: Ray Data would wait forever.
    job = ray_embed.JobConfig(num_workers=2, num_cpus_per_worker=1)
    with pytest.raises(ValueError, match="hold 2 of the cluster's 2 CPUs"):
        ray_embed.embed_to_parquet(collect_images([images]), str(tmp_path / "out"), embed_config(8), job)


def actor_pids() -> dict[int, str]:
    """pid → process title of this machine's Ray Data actors running EmbedBatch."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if title.startswith(ACTOR_TITLE):
            found[int(entry)] = title
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the actor processes through /proc")
def test_killed_worker_every_input_exactly_once(cluster, images, reference, tmp_path):
    paths = collect_images([images])
    out = tmp_path / "out"
    result: dict = {}

    def job():
        try:
            result["summary"] = ray_embed.embed_to_parquet(paths, str(out), embed_config(1), JOB)
        except BaseException as e:  # handed to the test thread
            result["error"] = e

    thread = threading.Thread(target=job)
    thread.start()
    seen: set[int] = set()
    victim = None
    busy_seen = 0
    deadline = time.monotonic() + 300
    # Kill an actor while it embeds a batch (title `...submit`), the third time one is seen busy: batches are done.
    while thread.is_alive() and victim is None and time.monotonic() < deadline:
        pids = actor_pids()
        seen |= pids.keys()
        busy = [pid for pid, title in pids.items() if title.endswith(".submit")]
        busy_seen += bool(busy)
        if busy_seen >= 3:
            victim = busy[0]
            os.kill(victim, signal.SIGKILL)
        time.sleep(0.005)
    killed_mid_job = thread.is_alive()
    after: set[int] = set()
    while thread.is_alive():
        after |= actor_pids().keys()
        thread.join(0.02)
    assert "error" not in result, f"the job failed after the kill: {result['error']!r}"
    assert victim is not None and killed_mid_job, "the job ended before an actor could be killed mid-batch"
    print(f"\nkilled actor {victim}; actors before: {sorted(seen)}, after: {sorted(after)}; {result['summary']}")
    # Ray reruns the lost batch on the restarted actor (a new process), so the job cannot finish without it.
    assert after - seen, f"no replacement actor came up after killing {victim}"
    job_fixtures.assert_same_rows(job_fixtures.read_rows(out), reference, paths)
