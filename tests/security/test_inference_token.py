"""The gateway sends AION_INFERENCE_TOKEN on every kind of call it makes to the inference service:
embeddings, chat (OpenAI client) and the adapter admin routes the trainer uses too."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.fixtures.servers import run_asgi

from .conftest import bearer, create_key

TOKEN = "tok-" + "5" * 40


@contextmanager
def recording_inference() -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """An inference stand-in that records (path, Authorization) and serves only the right token."""
    seen: list[tuple[str, str | None]] = []
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request) -> JSONResponse:
        auth = request.headers.get("authorization")
        seen.append(("/" + path, auth))
        if auth != f"Bearer {TOKEN}":
            return JSONResponse({"error": {"message": "bad token"}}, status_code=401)
        if path == "v1/embeddings":
            vector = (np.ones(384) / np.sqrt(384)).astype("<f4")
            return JSONResponse({"object": "list", "model": "minilm", "data": [
                {"object": "embedding", "index": 0, "embedding": base64.b64encode(vector.tobytes()).decode()}],
                "usage": {"prompt_tokens": 1, "total_tokens": 1}})
        return JSONResponse({"error": {"message": "not served by this stand-in"}}, status_code=418)

    with run_asgi(app) as url:
        yield url, seen


async def test_gateway_sends_the_inference_token_on_every_call(secure_gateway):
    with recording_inference() as (url, seen):
        async with secure_gateway(inference_url=url, AION_INFERENCE_TOKEN=TOKEN, AION_LOCAL_RETRIES=0) as client:
            admin = await create_key(client, role="admin")
            search = await client.post("/api/ai/search", headers=bearer(admin), json={"q": "cofre"})
            assert search.status_code == 200, search.text  # the embeddings call was accepted
            # tau 0: the local model is asked even with nothing retrieved.
            await client.post("/api/ai/chat", headers=bearer(admin), json={"message": "cofre?", "tau": 0})
            await client.post("/api/ai/llm/adapter/reload", headers=bearer(admin))
    paths = {path for path, _ in seen}
    assert {"/v1/embeddings", "/v1/chat/completions", "/adapter/reload"} <= paths, paths
    assert all(auth == f"Bearer {TOKEN}" for path, auth in seen if path != "/health"), seen
