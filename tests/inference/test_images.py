"""Image generation in the inference service, on a tiny Stable Diffusion pipeline (random weights, 64x64).

The app runs without its lifespan: the text model is not needed for images (they have their own
pipeline and worker), so these tests load no language model.
"""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image

from services.inference.main import create_app
from services.inference.settings import InferenceSettings
from tests.fixtures.servers import run_asgi

SMALL = {"size": "64x64", "num_inference_steps": 2}
# More steps than any test waits for: a generation that is running when cancelled stops part-way.
LONG_STEPS = 50_000  # below the tiny scheduler's 100,000 training steps


def _app(tmp_path, model=None, **env: Any):
    # One torch thread: two threads spin-waiting for each other on a busy 2-core machine stall for seconds.
    values = {"AION_DATA_DIR": str(tmp_path), "AION_IMAGE_MAX_STEPS": str(LONG_STEPS), "AION_THREADS": "1", **env}
    if model is not None:
        values["AION_IMAGE_MODEL"] = str(model)
    return create_app(InferenceSettings(**values))


async def _client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=300) as c:
        yield c
    app.state.inference.images.close()


@pytest.fixture
async def images(tmp_path, tiny_image_model) -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(_app(tmp_path, tiny_image_model, AION_IMAGE_MAX_QUEUE="1")):
        yield c


def _png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


async def _until(check: Callable[[], Any], what: str, timeout: float = 120.0) -> Any:
    """Poll until `check()` returns something truthy; the deadline only bounds a broken run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _job(client: httpx.AsyncClient, job_id: str, status: str, min_step: int = 0) -> dict:
    async def check():
        r = await client.get(f"/v1/images/jobs/{job_id}")
        body = r.json() if r.status_code == 200 else {}
        return body if body.get("status") == status and body.get("step", 0) >= min_step else None
    return await _until(check, f"job {job_id} to be {status}")


async def test_off_without_a_model_says_which_setting_turns_it_on(tmp_path) -> None:
    async for c in _client(_app(tmp_path)):
        for path, body in (("/v1/images/generations", {"prompt": "a cat"}), ("/generate-image", {"prompt": "a cat"})):
            r = await c.post(path, json=body)
            assert r.status_code == 503, r.text
            assert "AION_IMAGE_MODEL" in r.json()["error"]["message"]
        health = (await c.get("/health")).json()
        assert health["images"]["status"] == "off"


async def test_openai_and_native_routes_return_real_pngs(images) -> None:
    r = await images.post("/v1/images/generations", json={
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "seed": 7, "response_format": "b64_json",
        **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    image = _png(body["data"][0]["b64_json"])
    assert image.format == "PNG" and image.size == (64, 64)
    assert body["aion"]["seed"] == 7 and body["aion"]["num_inference_steps"] == 2 and body["aion"]["device"] == "cpu"

    # Same seed, same picture; the `url` form carries the PNG itself as a data: URL.
    again = await images.post("/v1/images/generations", json={
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "seed": 7, "response_format": "url", **SMALL})
    url = again.json()["data"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == base64.b64decode(body["data"][0]["b64_json"])

    native = await images.post("/generate-image", json={
        "prompt": "a lighthouse at dusk", "negative_prompt": "blurry", "width": 64, "height": 128,
        "num_inference_steps": 2, "guidance_scale": 5.0, "seed": 3})
    assert native.status_code == 200, native.text
    meta = native.json()["metadata"]
    assert meta["prompt"] == "a lighthouse at dusk"
    assert meta["parameters"] == {"negative_prompt": "blurry", "width": 64, "height": 128, "num_inference_steps": 2,
                                  "guidance_scale": 5.0, "seed": 3}
    assert _png(native.json()["image_url"].split(",", 1)[1]).size == (64, 128)


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"prompt": "x", "size": "65x64"}, 400, "AION_IMAGE_MAX_SIDE"),
    ({"prompt": "x", "size": "4096x64"}, 400, "AION_IMAGE_MAX_SIDE"),
    ({"prompt": "x", "num_inference_steps": LONG_STEPS + 1}, 400, "AION_IMAGE_MAX_STEPS"),
    ({"prompt": "x", "n": 99}, 400, "AION_IMAGE_MAX_N"),
    ({"prompt": "   "}, 422, "blank"),
    ({"prompt": "x", "size": "big"}, 422, "size"),
    ({"prompt": "x", "guidance_scale": -1}, 422, "guidance_scale"),
    ({"prompt": "x", "job_id": "../etc"}, 422, "job_id"),
])
async def test_bad_input_is_a_clear_4xx(images, body, status, words) -> None:
    r = await images.post("/v1/images/generations", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


async def test_queue_is_bounded_and_generations_are_cancellable(images) -> None:
    """One running, one waiting (AION_IMAGE_MAX_QUEUE=1), the third refused; both cancelled by name."""
    long = {"prompt": "a slow one", "size": "64x64", "num_inference_steps": LONG_STEPS}
    running = asyncio.create_task(images.post("/v1/images/generations", json={**long, "job_id": "first"}))
    await _job(images, "first", "running", min_step=1)
    waiting = asyncio.create_task(images.post("/v1/images/generations", json={**long, "job_id": "second"}))
    queued = await _job(images, "second", "queued")
    assert queued["position"] == 1

    full = await images.post("/v1/images/generations", json={**long, "job_id": "third"})
    assert full.status_code == 503 and int(full.headers["retry-after"]) >= 1
    assert "AION_IMAGE_MAX_QUEUE" in full.json()["error"]["message"]
    health = (await images.get("/health")).json()["images"]
    assert (health["running"], health["waiting"]) == (1, 1)

    cancelled = await images.post("/v1/images/jobs/second/cancel")
    assert cancelled.status_code == 200
    r2 = await waiting
    assert r2.status_code == 409 and r2.json()["error"]["code"] == "cancelled"
    assert (await images.get("/v1/images/jobs/second")).json()["step"] == 0  # it never ran

    await images.post("/v1/images/jobs/first/cancel")
    r1 = await running
    assert r1.status_code == 409 and "cancelled" in r1.json()["error"]["message"]
    first = (await images.get("/v1/images/jobs/first")).json()
    assert first["status"] == "cancelled" and 1 <= first["step"] < LONG_STEPS

    # The device is free again: the next request runs at once.
    ok = await images.post("/v1/images/generations", json={"prompt": "after", **SMALL, "response_format": "b64_json"})
    assert ok.status_code == 200, ok.text
    assert (await images.get("/v1/images/jobs/nope")).status_code == 404


async def test_a_client_that_disconnects_cancels_its_generation(tmp_path, tiny_image_model) -> None:
    app = _app(tmp_path, tiny_image_model)
    with run_asgi(app, lifespan="off") as url:
        async with httpx.AsyncClient(base_url=url, timeout=300) as watcher:
            async with httpx.AsyncClient(base_url=url, timeout=300) as doomed:
                request = asyncio.create_task(doomed.post("/generate-image", json={
                    "prompt": "never seen", "width": 64, "height": 64, "num_inference_steps": LONG_STEPS,
                    "job_id": "gone"}))
                await _job(watcher, "gone", "running", min_step=1)
                request.cancel()  # closes the connection
                with pytest.raises(asyncio.CancelledError):
                    await request
            job = await _job(watcher, "gone", "cancelled")
            assert job["step"] < LONG_STEPS and "disconnected" in job["error"]
    app.state.inference.images.close()
