"""Session-wide fixtures: real services on 127.0.0.1, started once and shared by the tests."""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait for each other lose whole scheduler slices when another process
# shares the cores: measured, a 2-thread engine beside one busy process generated 5-20x slower than with
# waiting threads that sleep (which costs little here). Set before torch loads libgomp; the services the
# tests start inherit it. The suite must pass on a loaded machine as on an idle one.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.servers import ServiceProcess, run_inference

pytest_plugins = ["tests.fixtures.postgres"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def inference_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The real inference service on the real default models (SmolLM2-135M + MiniLM)."""
    data = tmp_path_factory.mktemp("inference-data")
    with run_inference(data, data / "logs") as service:
        yield service


@pytest.fixture(scope="session")
def tiny_image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion pipeline (random weights) to give as AION_IMAGE_MODEL."""
    from tests.fixtures.tiny_diffusion import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def inference_url(inference_server: ServiceProcess) -> str:
    return inference_server.url
