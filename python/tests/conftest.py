"""Fixtures for the binding's tests: the tiny model (tests/fixtures/tiny_full, random weights), the bundled photos,
transformers' recorded numbers, and the Rust `embed` example run on the same inputs."""

import json
import subprocess

import pytest

import altclip

from job_fixtures import MODEL_DIR, REPO, embed_bin


@pytest.fixture(scope="session")
def expected() -> dict:
    """transformers' outputs on the tiny model (scripts/make_pipeline_fixtures.py); paths relative to the repo."""
    return json.loads((MODEL_DIR / "expected_pipeline.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def image_paths(expected) -> list:
    return [REPO / p for p in expected["images"]]


@pytest.fixture(scope="session")
def embedder() -> altclip.Embedder:
    return altclip.Embedder(str(MODEL_DIR))


@pytest.fixture(scope="session")
def rust_embed():
    """Runs the Rust `embed` example with `--format json` on images and texts; returns its JSON document."""
    binary = embed_bin()  # fails, saying how to build it, when missing

    def run(images, texts):
        argv = [str(binary), "--model-dir", str(MODEL_DIR), "--quiet", "--format", "json"]
        for image in images:
            argv += ["--image", str(image)]
        for text in texts:
            argv += ["--text", text]
        out = subprocess.run(argv, check=True, capture_output=True)
        return json.loads(out.stdout)

    return run
