"""POST /api/generate-image and the gallery, on the real gateway, real Postgres and a real inference service
(its image routes over HTTP on 127.0.0.1) running a tiny Stable Diffusion pipeline (random weights, 64x64)."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image

from services.gateway.auth import repository
from services.gateway.auth.keys import generate_key
from services.inference.main import create_app as create_inference_app
from services.inference.settings import InferenceSettings
from tests.fixtures.servers import run_asgi

from .conftest import gateway_settings, running_gateway

LONG_STEPS = 50_000  # below the tiny scheduler's 100,000: a run that is cancelled long before it ends
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def image_service(tmp_path_factory, tiny_image_model) -> Iterator[str]:
    """The inference app serving images only (no lifespan: the text model is not loaded)."""
    app = create_inference_app(InferenceSettings(
        AION_DATA_DIR=str(tmp_path_factory.mktemp("inference")), AION_IMAGE_MODEL=str(tiny_image_model),
        AION_IMAGE_MAX_QUEUE="1", AION_IMAGE_MAX_STEPS=str(LONG_STEPS), AION_THREADS="1"))
    with run_asgi(app, lifespan="off") as url:
        yield url
    app.state.inference.images.close()


def _settings(clean_db: str, url: str, tmp_path: Path, **overrides: Any):
    return gateway_settings(clean_db, url, AION_IMAGES_DIR=str(tmp_path / "images"),
                            AION_IMAGE_MAX_STEPS=str(LONG_STEPS), AION_IMAGE_MAX_SIDE="256", **overrides)


@pytest.fixture
async def gateway(clean_db, image_service, tmp_path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(_settings(clean_db, image_service, tmp_path)) as client:
        yield client


async def create_key(client: httpx.AsyncClient, role: str) -> str:
    new_key = generate_key()
    async with client.app.state.gateway.sessions() as session:  # type: ignore[attr-defined]
        await repository.create(session, name=f"{role}-{new_key.prefix}", role=role, tenant_id="test-tenant",
                                new_key=new_key)
        await session.commit()
    return new_key.key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _db(url: str, query: str, *params):
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


async def test_generate_store_serve_list_delete(gateway, clean_db, tmp_path) -> None:
    r = await gateway.post("/api/generate-image", json={
        "prompt": "a red bicycle", "negative_prompt": "blurry", "guidance_scale": 6.0, "seed": 11, **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    meta = body["metadata"]
    assert meta["prompt"] == "a red bicycle"
    assert meta["parameters"] == {"negative_prompt": "blurry", "width": 64, "height": 64, "num_inference_steps": 2,
                                  "guidance_scale": 6.0, "seed": 11}
    image_id = meta["id"]
    assert body["image_url"] == f"/api/images/{image_id}.png"

    served = await gateway.get(body["image_url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert "private" in served.headers["cache-control"]
    assert Image.open(io.BytesIO(served.content)).size == (64, 64)
    files = list((tmp_path / "images").rglob("*.png"))
    assert [f.read_bytes() for f in files] == [served.content]

    rows = _db(clean_db, "SELECT tenant_id, prompt, seed, width, num_inference_steps, created_by FROM images")
    assert rows == [("test-tenant", "a red bicycle", 11, 64, 2, "local (AION_AUTH=off)")]
    # Logged like an answer: when, who, what it cost (nothing), how long it took.
    events = _db(clean_db, "SELECT kind, value, meta, request_id, created_at FROM ai_events WHERE kind = 'image'")
    assert len(events) == 1
    kind, value, event, request_id, created_at = events[0]
    assert value == 1.0 and event["cost_usd"] == 0.0 and event["who"] == "local (AION_AUTH=off)"
    assert event["image_id"] == image_id and event["latency_ms"] >= 0 and request_id and created_at

    listed = (await gateway.get("/api/images")).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == image_id
    assert (await gateway.get(f"/api/images/{image_id}")).json()["seed"] == 11

    deleted = await gateway.delete(f"/api/images/{image_id}")
    assert deleted.status_code == 200 and deleted.json() == {"id": image_id, "deleted": True}
    assert list((tmp_path / "images").rglob("*.png")) == []
    assert (await gateway.get(body["image_url"])).status_code == 404
    assert (await gateway.delete(f"/api/images/{image_id}")).status_code == 404
    assert (await gateway.get("/api/images")).json()["total"] == 0


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"prompt": "x", "width": 100, "height": 64}, 400, "AION_IMAGE_MAX_SIDE"),
    ({"prompt": "x", "width": 512, "height": 64}, 400, "AION_IMAGE_MAX_SIDE"),
    ({"prompt": "x", **SMALL, "num_inference_steps": LONG_STEPS + 1}, 400, "AION_IMAGE_MAX_STEPS"),
    ({"prompt": "x", "width": 32}, 422, "width"),
    ({"prompt": " "}, 422, "blank"),
    ({"prompt": "x", "guidance_scale": 99}, 422, "guidance_scale"),
    ({"prompt": "x", "seed": -1}, 422, "seed"),
    ({"prompt": "x", "steps": 3}, 422, "steps"),
])
async def test_bad_input_is_refused_before_anything_runs(gateway, clean_db, body, status, words) -> None:
    r = await gateway.post("/api/generate-image", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]
    assert _db(clean_db, "SELECT count(*) FROM images") == [(0,)]
    assert (await gateway.get(f"/api/images/{uuid.uuid4()}")).status_code == 404
    assert (await gateway.get("/api/images/not-a-uuid.png")).status_code == 422


async def _until_running(gateway: httpx.AsyncClient, job_id: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        r = await gateway.get(f"/api/images/jobs/{job_id}")
        if r.status_code == 200 and r.json()["status"] == "running" and r.json()["step"] >= 1:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} never ran")


async def test_busy_service_is_a_503_with_retry_after_and_a_cancel_stores_nothing(gateway, clean_db, tmp_path) -> None:
    long = {"prompt": "slow", "width": 64, "height": 64, "num_inference_steps": LONG_STEPS}
    first = asyncio.create_task(gateway.post("/api/generate-image", json={**long, "job_id": "gw-first"}))
    await _until_running(gateway, "gw-first")
    second = asyncio.create_task(gateway.post("/api/generate-image", json={**long, "job_id": "gw-second"}))
    deadline = time.monotonic() + 60
    while (await gateway.get("/api/images/jobs/gw-second")).status_code != 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    busy = await gateway.post("/api/generate-image", json={**long, "job_id": "gw-third"})
    assert busy.status_code == 503, busy.text
    assert int(busy.headers["retry-after"]) >= 1 and "AION_IMAGE_MAX_QUEUE" in busy.json()["error"]["message"]

    for job in ("gw-second", "gw-first"):
        assert (await gateway.post(f"/api/images/jobs/{job}/cancel")).status_code == 200
    for task in (second, first):
        r = await task
        assert r.status_code == 409 and r.json()["error"]["code"] == "cancelled"
    assert (await gateway.get("/api/images/jobs/gw-first")).json()["status"] == "cancelled"
    assert _db(clean_db, "SELECT count(*) FROM images") == [(0,)]
    assert list((tmp_path / "images").rglob("*.png")) == []
    # Failed generations are logged too, as not complete.
    failed = _db(clean_db, "SELECT value, meta->>'error' FROM ai_events WHERE kind = 'image' ORDER BY id")
    assert [v for v, _ in failed] == [0.0, 0.0, 0.0] and all(e for _, e in failed)
    assert (await gateway.get("/api/images/jobs/unknown-job")).status_code == 404


async def test_off_or_unreachable_image_service_is_a_503_naming_the_setting(clean_db, tmp_path) -> None:
    app = create_inference_app(InferenceSettings(AION_DATA_DIR=str(tmp_path / "inf")))  # no AION_IMAGE_MODEL
    with run_asgi(app, lifespan="off") as url:
        async with running_gateway(_settings(clean_db, url, tmp_path)) as gateway:
            r = await gateway.post("/api/generate-image", json={"prompt": "x", **SMALL})
            assert r.status_code == 503 and "AION_IMAGE_MODEL" in r.json()["error"]["message"]
    async with running_gateway(_settings(clean_db, url, tmp_path)) as gateway:  # now closed
        r = await gateway.post("/api/generate-image", json={"prompt": "x", **SMALL})
        assert r.status_code == 503 and "AION_IMAGES_URL" in r.json()["error"]["message"]


async def test_images_need_a_key_and_deleting_needs_admin(clean_db, image_service, tmp_path) -> None:
    async with running_gateway(_settings(clean_db, image_service, tmp_path, AION_AUTH="on")) as gateway:
        user, admin = await create_key(gateway, "user"), await create_key(gateway, "admin")
        assert (await gateway.post("/api/generate-image", json={"prompt": "x", **SMALL})).status_code == 401
        made = await gateway.post("/api/generate-image", json={"prompt": "a kite", **SMALL}, headers=bearer(user))
        assert made.status_code == 200, made.text
        url = made.json()["image_url"]
        assert made.json()["metadata"]["created_by"].startswith("user-")
        assert (await gateway.get(url)).status_code == 401
        assert (await gateway.get(url, headers=bearer(user))).status_code == 200
        image_id = made.json()["metadata"]["id"]
        assert (await gateway.delete(f"/api/images/{image_id}", headers=bearer(user))).status_code == 403
        assert (await gateway.delete(f"/api/images/{image_id}", headers=bearer(admin))).status_code == 200
