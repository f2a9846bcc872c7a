"""Before the model is ready, and with a service token: checked in-process without loading a model."""

from __future__ import annotations

import httpx
import pytest

from services.inference.main import create_app
from services.inference.settings import InferenceSettings


@pytest.fixture
def app_not_loaded(tmp_path):
    # No lifespan runs under ASGITransport, so the state stays `loading`.
    return create_app(InferenceSettings(AION_DATA_DIR=str(tmp_path), AION_INFERENCE_TOKEN="s3cret"))


async def test_health_answers_loading_and_generation_is_503(app_not_loaded) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_not_loaded), base_url="http://t") as c:
        health = await c.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "loading"
        r = await c.post("/generate", json={"prompt": "hi"}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 503 and r.headers["retry-after"]
        assert "loading" in r.json()["error"]["message"]


async def test_token_required_on_every_route_but_health(app_not_loaded) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_not_loaded), base_url="http://t") as c:
        for method, path in [("POST", "/generate"), ("POST", "/generate/stream"), ("POST", "/v1/chat/completions"),
                             ("GET", "/v1/models"), ("POST", "/v1/embeddings"), ("POST", "/adapter/reload"),
                             ("POST", "/adapter/merge"), ("GET", "/adapters"), ("GET", "/metrics")]:
            r = await c.request(method, path, json={})
            assert r.status_code == 401, (path, r.status_code)
            assert "AION_INFERENCE_TOKEN" in r.json()["error"]["message"]
        wrong = await c.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401


@pytest.mark.parametrize("value", ["-5", "lots"])
def test_a_bad_prefix_cache_size_is_refused_by_name(tmp_path, value: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="AION_PREFIX_CACHE_MB"):
        InferenceSettings(AION_DATA_DIR=str(tmp_path), AION_PREFIX_CACHE_MB=value)
