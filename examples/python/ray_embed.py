"""Embeds a directory of images with Ray Data: one `altclip.Embedder` per actor in `map_batches`, Parquet out.

The rows and schema are those of `embed --format parquet` (see embed_job.py): one row per input file, a file that
cannot be decoded gives a row with its error and a null embedding. Runs offline (no dashboard, no usage stats).

    python examples/python/ray_embed.py --model-dir tests/fixtures/tiny_full --images examples/images \\
        --output out/ --num-workers 2 --batch-size 16
    ray job submit --working-dir . -- python examples/python/ray_embed.py --model BAAI/AltCLIP \\
        --images /shared/photos --output /shared/emb --num-workers 8 --num-gpus-per-worker 1 --device cuda
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pyarrow as pa  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import embed_job  # noqa: E402
from embed_job import EmbedConfig, Summary  # noqa: E402


class EmbedBatch:
    """The `map_batches` callable: loads one Embedder when its actor starts, then turns each Arrow batch of
    `read_binary_files` rows (`bytes`, `path`) into output rows."""

    def __init__(self, config: EmbedConfig, threads: float):
        self.embedder = config.load(threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column("path").to_pylist()
        return embed_job.embed_rows(self.embedder, paths, batch.column("bytes").to_pylist())


@dataclass(frozen=True)
class JobConfig:
    """The Ray side of a job: the actor pool and what each actor asks for."""

    num_workers: int = 1
    num_gpus_per_worker: float = 0
    num_cpus_per_worker: float = 1
    # A dead actor (its process or node lost) is recreated this often (-1: always) and its unfinished batches rerun
    # up to `max_task_retries` times, so an image that kills its worker fails the job instead of looping forever.
    # Read and write tasks keep Ray Data's default: retried on system failures without limit.
    max_restarts: int = -1
    max_task_retries: int = 3


def build_dataset(paths: list[str], embed: EmbedConfig, job: JobConfig):
    """The lazy Ray Dataset of output rows, one per path (nothing runs until it is written or iterated)."""
    import ray
    import ray.data

    if not paths:
        raise ValueError("no image files to embed")
    # Ship the job's code to the workers by value, so they need only the installed packages.
    ray.cloudpickle.register_pickle_by_value(embed_job)
    if __name__ != "__main__":
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ds = ray.data.read_binary_files(paths, include_paths=True)
    # max_restarts / max_task_retries go through `**ray_remote_args`, which Ray 2.60 deprecates (2.64 drops it,
    # leaving Ray Data's defaults of -1 / -1).
    return ds.map_batches(
        EmbedBatch,
        fn_constructor_kwargs={"config": embed, "threads": job.num_cpus_per_worker},
        batch_format="pyarrow",
        batch_size=embed.batch_size,
        compute=ray.data.ActorPoolStrategy(size=job.num_workers),
        num_gpus=job.num_gpus_per_worker,
        num_cpus=job.num_cpus_per_worker,
        max_restarts=job.max_restarts,
        max_task_retries=job.max_task_retries,
    )


def check_cpus(job: JobConfig, cluster_cpus: float) -> None:
    """Refuses a pool whose actors would hold every CPU of the cluster: Ray Data would then wait forever for a CPU
    to read and write files on. (An autoscaling cluster is judged by the CPUs it has now.)"""
    held = job.num_workers * job.num_cpus_per_worker
    if held > cluster_cpus - 1:
        raise ValueError(
            f"{job.num_workers} worker(s) x {job.num_cpus_per_worker} CPU hold {held:g} of the cluster's "
            f"{cluster_cpus:g} CPUs, leaving less than one to read and write files: lower --num-cpus-per-worker "
            "or --num-workers"
        )


def embed_to_parquet(paths: list[str], output: str, embed: EmbedConfig, job: JobConfig) -> Summary:
    """Embeds `paths` (image files; see `embed_job.collect_images`) into Parquet files under `output`, on the Ray
    cluster this process is connected to (`ray.init` first)."""
    import ray

    embed_job.check_output_dir(output)
    check_cpus(job, ray.cluster_resources().get("CPU", 0))
    start = time.perf_counter()
    build_dataset(paths, embed, job).write_parquet(output)
    summary = Summary.of(output, time.perf_counter() - start)
    embed_job.check_one_row_each(summary, len(paths))
    return summary


def init_ray(address: str | None) -> None:
    """Joins the cluster at `address` (or `RAY_ADDRESS`, as `ray job submit` sets), else starts a local one without
    the dashboard."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(include_dashboard=False)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EmbedConfig, JobConfig]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    embed_job.add_embed_args(p)
    p.add_argument("--num-workers", type=int, default=1, help="actors, each holding one Embedder")
    p.add_argument("--num-gpus-per-worker", type=float, default=0)
    p.add_argument("--num-cpus-per-worker", type=float, default=1)
    p.add_argument("--max-restarts", type=int, default=-1, help="recreations of a dead actor (-1: always)")
    p.add_argument("--max-task-retries", type=int, default=3, help="reruns of a batch whose actor died")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    args = p.parse_args(argv)
    if args.num_workers < 1:
        p.error("--num-workers must be at least 1")
    job = JobConfig(
        num_workers=args.num_workers,
        num_gpus_per_worker=args.num_gpus_per_worker,
        num_cpus_per_worker=args.num_cpus_per_worker,
        max_restarts=args.max_restarts,
        max_task_retries=args.max_task_retries,
    )
    return args, embed_job.embed_config(args), job


def main(argv: list[str] | None = None) -> int:
    args, embed, job = parse_args(argv)
    paths = embed_job.collect_images(args.images)
    embed_job.check_output_dir(args.output)
    init_ray(args.address)
    print(embed_to_parquet(paths, args.output, embed, job))
    return 0


if __name__ == "__main__":
    sys.exit(main())
