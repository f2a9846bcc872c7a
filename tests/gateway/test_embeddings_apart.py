"""Embeddings apart from chat: `aion inference --embeddings-only` (no chat model; chat routes refuse with
a reason) serving the gateway's retrieval through AION_EMBEDDINGS_URL while chat points elsewhere, and
a gateway that refuses to start on an embeddings server whose dimension is not the stored one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from services.gateway.services.embedding_check import EmbeddingDimensionMismatch
from services.inference.main import create_app as create_inference_app
from services.inference.settings import InferenceSettings
from tests.fixtures.servers import MODEL_CACHE, free_port, run_asgi
from tests.gateway.conftest import gateway_settings, kb_files, running_gateway

TOKEN = "embeddings-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def embeddings_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real inference app with AION_EMBEDDINGS_ONLY, on a real uvicorn (in this process: no second torch)."""
    settings = InferenceSettings(_env_file=None, AION_EMBEDDINGS_ONLY=True, AION_INFERENCE_TOKEN=TOKEN,
                                 AION_DATA_DIR=str(tmp_path_factory.mktemp("embeddings-only")),
                                 AION_MODEL_CACHE_DIR=str(MODEL_CACHE))
    with run_asgi(create_inference_app(settings)) as url:
        deadline = time.monotonic() + 300
        while (health := httpx.get(f"{url}/health", timeout=10).json())["status"] == "loading":
            assert time.monotonic() < deadline, health
            time.sleep(0.2)
        assert health["status"] == "ready", health
        yield url


def test_embeddings_only_serves_vectors_and_refuses_chat_with_a_reason(embeddings_only: str) -> None:
    health = httpx.get(f"{embeddings_only}/health", timeout=10).json()
    assert health["mode"] == "embeddings-only" and health["base_model"] is None
    assert health["embedding_model"] == "all-minilm-l6-v2" and health["queue"] is None
    r = httpx.post(f"{embeddings_only}/v1/embeddings", json={"input": ["a bicycle chain"]}, headers=AUTH, timeout=60)
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 384
    assert httpx.post(f"{embeddings_only}/v1/embeddings", json={"input": ["x"]}, timeout=60).status_code == 401
    chat = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    for method, path, body in [("POST", "/v1/chat/completions", chat), ("POST", "/generate", {"prompt": "hi"}),
                               ("POST", "/adapter/reload", {}), ("GET", "/v1/models", None)]:
        r = httpx.request(method, f"{embeddings_only}{path}", json=body, headers=AUTH, timeout=30)
        error = r.json()["error"]
        assert r.status_code == 503 and error["code"] == "chat_not_served", (path, r.text)
        assert "--embeddings-only" in error["message"] and "/v1/embeddings" in error["message"]


async def test_gateway_retrieves_through_the_embeddings_url_while_chat_is_elsewhere(
        clean_db: str, embeddings_only: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # the chat server (vLLM, say) is not even up
    settings = gateway_settings(clean_db, closed, AION_EMBEDDINGS_URL=embeddings_only, AION_INFERENCE_TOKEN=TOKEN)
    async with running_gateway(settings) as gw:
        r = await gw.post("/api/ai/documents", files=kb_files("bicycle.md"))
        assert r.status_code == 201, r.text
        found = (await gw.post("/api/ai/search", json={"q": "How often is the bicycle chain lubricated?"})).json()
        assert found["passages"][0]["document"].lower().startswith("bicycle") and found["C"] > 0.6
        health = (await gw.get("/health")).json()
        assert (health["embeddings"], health["inference"]) == ("ready", "unreachable")


def _embedding_server(dimensions: int) -> FastAPI:
    """An OpenAI-compatible embeddings server of another model (a real HTTP server, 768 dimensions)."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(body: dict) -> dict:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return {"object": "list", "model": "bge-base-en", "usage": {"prompt_tokens": 1, "total_tokens": 1},
                "data": [{"object": "embedding", "index": i, "embedding": [0.01] * dimensions}
                         for i in range(len(texts))]}

    return app


async def test_gateway_refuses_to_start_on_another_dimension_naming_both(clean_db: str) -> None:
    with run_asgi(_embedding_server(768)) as url:
        settings = gateway_settings(clean_db, f"http://127.0.0.1:{free_port()}", AION_EMBEDDINGS_URL=url)
        with pytest.raises(EmbeddingDimensionMismatch) as err:
            async with running_gateway(settings):
                pass
    message = err.value.message
    assert "768" in message and "384" in message and "bge-base-en" in message and url in message
    assert "AION_EMBEDDINGS_URL" in message


def test_vllm_backend_needs_an_embeddings_url() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="AION_EMBEDDINGS_URL"):
        gateway_settings("postgresql://unused", "http://127.0.0.1:8000", AION_INFERENCE_BACKEND="vllm")
    with pytest.raises(ValidationError, match="AION_INFERENCE_BACKEND"):
        gateway_settings("postgresql://unused", "http://127.0.0.1:8000", AION_INFERENCE_BACKEND="tgi")
