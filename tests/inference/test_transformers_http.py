"""The inference service on the transformers path, over HTTP: a tiny random Qwen2 (the GPU default's
architecture; its outputs mean nothing, which is what lets a stream run as long as a test needs).

Queueing: a full queue is a 503 with Retry-After before any stream starts; a client that leaves frees its
place, queued or running, non-streaming requests included. A seed out of 64-bit range is a 422. Adapters:
a reload while a stream runs leaves that stream's tokens as they would have been. Requests that must stay
running while a test acts ask for ENDLESS tokens (a long context, no end-of-sequence in random weights):
they end only when their client leaves, however fast the machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.models import save_tiny_qwen2
from tests.fixtures.servers import ServiceProcess, run_inference

pytestmark = pytest.mark.slow

ENDLESS = 60_000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"), max_positions=2 * ENDLESS)


@pytest.fixture(scope="module")
def server(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    data = tmp_path_factory.mktemp("tiny-server")
    with run_inference(data, data / "logs", AION_BASE_MODEL=str(tiny), AION_EMBED_MODEL="none",
                       AION_MAX_BATCH_SIZE="1", AION_MAX_QUEUE="1", AION_MAX_NEW_TOKENS=str(ENDLESS),
                       AION_PREFIX_CACHE_MB="0") as service:
        yield service


def body(max_new: int = ENDLESS, **extra) -> dict:
    return {"prompt": "Tell me about the sea.", "temperature": 0, "max_new_tokens": max_new, **extra}


def wait_for(url: str, check, what: str, deadline_s: float = 300) -> dict:
    """Poll /health until `check(health)` holds (a state to reach, not a time to meet)."""
    end = time.monotonic() + deadline_s
    while True:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if check(health):
            return health
        assert time.monotonic() < end, f"never reached: {what} (last: {health['queue']})"
        time.sleep(0.1)


def idle(url: str) -> dict:
    return wait_for(url, lambda h: h["queue"]["running"] == 0 and h["queue"]["waiting"] == 0, "an idle engine")


def test_health_names_the_runner_and_embeddings_are_off(server: ServiceProcess) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["runner"] == "transformers" and health["embedding_model"] is None
    assert health["kv_cache"]["budget_mb"] >= 0
    r = httpx.post(f"{server.url}/v1/embeddings", json={"input": "hi"})
    assert r.status_code == 503 and "AION_EMBED_MODEL=none" in r.json()["error"]["message"]


async def test_a_full_queue_is_a_503_before_the_stream_starts(server: ServiceProcess) -> None:
    url = server.url
    idle(url)
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async with client.stream("POST", "/generate/stream", json=body()) as running:
            assert running.status_code == 200
            lines = running.aiter_lines()
            while not (await anext(lines)).startswith("data:"):
                pass  # the first token: it is running
            async with client.stream("POST", "/generate/stream", json=body()) as queued:
                assert queued.status_code == 200
                await asyncio.to_thread(wait_for, url, lambda h: h["queue"]["waiting"] == 1, "one waiting")
                refused = await client.post("/v1/chat/completions", json={
                    "model": "default", "stream": True, "max_tokens": 5,
                    "messages": [{"role": "user", "content": "hi"}]})
                assert refused.status_code == 503 and refused.headers["retry-after"]
                assert "queue is full" in refused.json()["error"]["message"]
    # both clients left: the waiting one left the queue, the running one the batch
    await asyncio.to_thread(idle, url)


def cancelled(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics").text
    lines = [line for line in metrics.splitlines()
             if line.startswith('aion_inference_sequences_finished_total{reason="cancelled"}')]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_a_client_that_leaves_a_non_streaming_request_stops_it(server: ServiceProcess) -> None:
    url = server.url
    idle(url)
    before = cancelled(url)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/generate", json=body(), timeout=httpx.Timeout(60, read=2))
    # Without the watch on the connection it would go on generating for nobody.
    idle(url)
    assert cancelled(url) == before + 1


@pytest.mark.parametrize(("route", "payload"), [
    ("/generate", {"prompt": "hi", "seed": 2**64}),
    ("/v1/chat/completions", {"model": "default", "seed": -(2**63) - 1, "messages": [{"role": "user", "content": "hi"}]}),
])
def test_a_seed_out_of_64_bit_range_is_refused_by_name(server: ServiceProcess, route: str, payload: dict) -> None:
    r = httpx.post(f"{server.url}{route}", json=payload, timeout=30)
    assert r.status_code == 422 and "seed" in r.text


def build_tiny_adapter(base: Path, target: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(target)
    return target


async def stream_text(client: httpx.AsyncClient, payload: dict, on_first=None) -> str:
    parts = []
    async with client.stream("POST", "/generate/stream", json=payload) as r:
        assert r.status_code == 200
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                parts.append(json.loads(line[5:])["text"])
                if on_first is not None and len(parts) == 1:
                    await on_first()
    return "".join(parts)


async def test_a_reload_during_a_stream_leaves_its_tokens_unchanged(server: ServiceProcess, tiny: Path,
                                                                   tmp_path: Path) -> None:
    url = server.url
    adapter = build_tiny_adapter(tiny, tmp_path / "adapter")
    payload = body(max_new=440, adapter=tiny.name)  # long enough to be running when the reload lands
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await asyncio.to_thread(idle, url)
        alone = await stream_text(client, payload)

        async def reload() -> None:
            r = await client.post("/adapter/reload", json={"path": str(adapter), "name": "tiny-v1",
                                                           "activate": False})
            assert r.status_code == 200, r.text

        during = await stream_text(client, payload, on_first=reload)
        adapted = await stream_text(client, {**payload, "adapter": "tiny-v1"})
    assert during == alone  # the base weights' tokens, before and after the adapter arrived
    assert adapted != alone
