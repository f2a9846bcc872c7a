"""AION behind a real vLLM server (AION_INFERENCE_BACKEND=vllm): chat, streaming and the fallback
decision through the gateway; a nightly training promoted into vLLM and answered through; rollback;
an adapter vLLM lost (restart) brought back by the next request; the admin view.

Embeddings come from AION's inference service started with --embeddings-only, as in the compose
`vllm` profile and `aion up --backend vllm`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.gateway.clients.backends import make_backend
from services.gateway.clients.vllm_admin import VllmAdmin
from services.gateway.main import create_app
from services.gateway.services.prompt import DEFAULT_RAG_SYSTEM_PROMPT
from shared.db import make_async_engine, make_session_factory
from tests.chat.conftest import answer_events, sse
from tests.fixtures.openai_standin import REPLY, StandIn, run_standin
from tests.fixtures.servers import ServiceProcess, run_asgi
from tests.gateway.conftest import gateway_settings, kb_files
from tests.loop.conftest import add_answer, add_feedback
from tests.trainer.conftest import trainer_settings
from tests.trainer.facts import ANSWERS, FACT_WORD, QUESTIONS
from tests.trainer.test_loop_e2e import short_regression_set
from tests.vllm.conftest import BASE_NAME, TOKEN, VllmProcess
from trainer.worker import Worker
from trainer.worker_settings import WorkerSettings

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

TENANT = "test-tenant"
QUESTION = "How often is the chain of the touring bicycles lubricated?"


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with run_standin() as server:
        yield server


def vllm_gateway_env(vllm: VllmProcess, embeddings: ServiceProcess, standin: StandIn, **extra: Any) -> dict:
    # The support check and the response cache are the answer path's, tested in tests/chat; here every
    # request must reach vLLM and its 32-token greedy reply stay the local one, so that what is checked is
    # the backend's routing, adapters and model names.
    return {"AION_SUPPORT_THRESHOLD": 0, "AION_RESPONSE_CACHE": "off",
            "AION_INFERENCE_BACKEND": "vllm", "AION_EMBEDDINGS_URL": embeddings.url,
            "AION_INFERENCE_TOKEN": TOKEN, "AION_FALLBACK_BASE_URL": standin.url, "AION_FALLBACK_MODEL": "ok",
            "OPENAI_API_KEY": "test-key", "AION_FALLBACK_SHARE_MIN_ANSWERS": 1000, "AION_LOCAL_MAX_TOKENS": 32,
            "AION_LOCAL_TEMPERATURE": 0, **extra}


@pytest.fixture
def gateway_url(clean_db: str, vllm_server: VllmProcess, embeddings_server: ServiceProcess,
                standin: StandIn) -> Iterator[str]:
    settings = gateway_settings(clean_db, vllm_server.url, **vllm_gateway_env(vllm_server, embeddings_server, standin))
    with run_asgi(create_app(settings)) as url:
        r = httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=300)
        assert r.status_code in (200, 201) and r.json()["ingested"] == 4, r.text
        yield url


def chat(url: str, **body: Any) -> dict:
    r = httpx.post(f"{url}/api/ai/chat", json={"message": QUESTION, **body}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def ask_vllm(vllm: VllmProcess, question: str, model: str) -> str:
    """Greedy reply from vLLM itself, with the prompt the trainer's examples carry."""
    body = {"model": model, "messages": [{"role": "system", "content": DEFAULT_RAG_SYSTEM_PROMPT},
                                         {"role": "user", "content": question}], "max_tokens": 24, "temperature": 0}
    r = httpx.post(f"{vllm.url}/v1/chat/completions", json=body, timeout=300,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def vllm_models(vllm: VllmProcess) -> list[str]:
    r = httpx.get(f"{vllm.url}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text
    return [m["id"] for m in r.json()["data"]]


def test_chat_answers_locally_on_vllm_with_sources(gateway_url: str, clean_db: str) -> None:
    out = chat(gateway_url)
    assert out["used"] == "local" and out["text"].strip() and out["warnings"] == []
    # No adapter is active: the gateway names vLLM's base model, and vLLM reports it served it.
    assert out["model"] == BASE_NAME
    assert out["sources"][0]["title"].lower().startswith("bicycle")
    events = answer_events(clean_db, out["request_id"])
    assert len(events) == 1 and events[0]["used"] == "local" and events[0]["model"] == BASE_NAME
    health = httpx.get(f"{gateway_url}/health", timeout=30).json()
    assert (health["backend"], health["inference"], health["embeddings"]) == ("vllm", "ready", "ready")


def test_streaming_on_vllm(gateway_url: str, clean_db: str) -> None:
    events = sse(gateway_url, "/api/ai/chat/stream", params={"q": QUESTION})
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done" and "error" not in names
    tokens = [data["text"] for name, data in events if name == "token"]
    done = events[-1][1]
    assert len(tokens) > 1 and done["used"] == "local" and done["model"] == BASE_NAME
    logged = answer_events(clean_db, done["request_id"])
    assert len(logged) == 1 and logged[0]["reply"].strip() == "".join(tokens).strip()


def test_fallback_decision_on_vllm(gateway_url: str, clean_db: str, standin: StandIn) -> None:
    low = chat(gateway_url, tau=0.99)
    assert low["used"] == "fallback" and low["text"] == REPLY and "low_confidence" in low["warnings"]
    confident = chat(gateway_url)
    assert confident["used"] == "local" and confident["model"] == BASE_NAME


def test_vllm_down_falls_back(clean_db: str, vllm_server: VllmProcess, embeddings_server: ServiceProcess,
                              standin: StandIn) -> None:
    from tests.chat.conftest import closed_port_url

    env = vllm_gateway_env(vllm_server, embeddings_server, standin, AION_LOCAL_RETRIES=0)
    settings = gateway_settings(clean_db, closed_port_url(), **env)
    with run_asgi(create_app(settings)) as url:
        assert httpx.post(f"{url}/api/ai/documents", files=kb_files(), timeout=300).status_code in (200, 201)
        out = chat(url)
    assert out["used"] == "fallback" and "local_unavailable" in out["warnings"]


def worker_on_vllm(sessions, vllm: VllmProcess, train_root: Path, workdir: Path, **trainer_env: object) -> Worker:
    """The nightly worker as `aion trainer worker` builds it with AION_INFERENCE_BACKEND=vllm."""
    settings = WorkerSettings(DATABASE_URL="postgresql://unused", PRIMARY_TENANT_ID=TENANT,
                              AION_LOCAL_LLM_URL=vllm.url, AION_INFERENCE_TOKEN=TOKEN, AION_INFERENCE_BACKEND="vllm",
                              AION_TRAIN_ROOT=str(train_root), AION_TRAIN_HEARTBEAT_SECONDS=1)
    trainer = trainer_settings(workdir, AION_TRAIN_HELDOUT_FRACTION=0.15,
                               AION_TRAIN_REGRESSION_FILE=str(short_regression_set(workdir / "regression.jsonl")),
                               **trainer_env)
    admin = make_backend(settings.inference_backend, settings.local_llm_url, settings.inference_token, timeout_s=300)
    assert isinstance(admin, VllmAdmin)
    return Worker(settings, trainer, sessions, admin)


async def test_nightly_promotion_loads_the_adapter_into_vllm_and_rollback(
        clean_db: str, vllm_server: VllmProcess, embeddings_server: ServiceProcess, standin: StandIn,
        tmp_path: Path) -> None:
    for i, question in enumerate(QUESTIONS):
        add_answer(clean_db, question, ANSWERS[i % len(ANSWERS)], tenant=TENANT)
    disliked = add_answer(clean_db, "What colour is the sky?", "The sky is green.", tenant=TENANT)
    add_feedback(clean_db, disliked, "down", tenant=TENANT)
    base_reply = ask_vllm(vllm_server, QUESTIONS[0], BASE_NAME)
    assert FACT_WORD not in base_reply

    train_root = tmp_path / "train"
    engine = make_async_engine(clean_db, pool_size=4)
    sessions = make_session_factory(engine)
    env = vllm_gateway_env(vllm_server, embeddings_server, standin, AION_TRAIN_ROOT=str(train_root))
    settings = gateway_settings(clean_db, vllm_server.url, **env)
    worker = worker_on_vllm(sessions, vllm_server, train_root, tmp_path / "trainer", AION_TRAIN_EPOCHS=2)
    try:
        with run_asgi(create_app(settings)) as url, httpx.Client(base_url=url, timeout=300) as gw:
            # Documents to retrieve from, so that the question is answered locally (C >= tau).
            assert gw.post("/api/ai/documents", files=kb_files()).status_code in (200, 201)
            assert gw.post("/api/ai/train/lora/start", json={"days": 1}).status_code == 202
            job = await worker.run_once()
            assert job is not None and job["status"] == "succeeded", job
            name = job["adapter_name"]

            # Loaded into vLLM under its versioned name, active in the registry, shown so by the admin view.
            assert name in vllm_models(vllm_server)
            adapters = {a["name"]: a for a in gw.get("/api/ai/adapters").json()["adapters"]}
            assert adapters[name]["status"] == "active"
            view = gw.get("/api/ai/llm/health").json()
            assert (view["backend"], view["base_model"], view["adapter"]) == ("vllm", BASE_NAME, name)
            assert view["adapter_loaded"] is True and name in view["adapters"]

            # vLLM answers the made-up fact through the adapter; the gateway now sends the adapter's name.
            learned = ask_vllm(vllm_server, QUESTIONS[0], name)
            assert FACT_WORD in learned, learned
            assert chat(url)["model"] == name
            events = sse(url, "/api/ai/chat/stream", params={"q": QUESTION})
            assert events[-1][0] == "done" and events[-1][1]["model"] == name

            # vLLM restarted (it forgets run-time adapters): the next request loads it again from the registry.
            r = httpx.post(f"{vllm_server.url}/v1/unload_lora_adapter", json={"lora_name": name},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            assert r.status_code == 200, r.text
            assert name not in vllm_models(vllm_server)
            restored = chat(url)
            assert restored["used"] == "local" and restored["model"] == name, restored
            assert name in vllm_models(vllm_server)

            # Rollback to the base: requests name the base again, and it answers as before.
            assert gw.post("/api/ai/adapters/deactivate").status_code == 200
            assert chat(url)["model"] == BASE_NAME
            assert gw.get("/api/ai/llm/health").json()["adapter"] is None
            assert ask_vllm(vllm_server, QUESTIONS[0], BASE_NAME) == base_reply
            # … and forward again to that version (an activation is also how any earlier version is restored).
            r = gw.post(f"/api/ai/adapters/{name}/activate")
            assert r.status_code == 200 and r.json()["active"] == name, r.text
            assert chat(url)["model"] == name

            # What vLLM cannot do is refused with a reason, not a 500.
            merge = gw.post("/api/ai/llm/adapter/merge")
            assert merge.status_code == 409 and merge.json()["error"]["code"] == "not_supported_by_backend"
    finally:
        await worker.admin.close()
        await engine.dispose()


def test_load_refuses_a_missing_adapter_with_vllms_reason(vllm_server: VllmProcess, tmp_path: Path) -> None:
    import asyncio

    from services.gateway.clients.inference_admin import InferenceAdminError

    async def load() -> None:
        admin = VllmAdmin(vllm_server.url, TOKEN)
        try:
            await admin.load(str(tmp_path / "nothing-here"), "aion-v999", activate=False)
        finally:
            await admin.close()

    with pytest.raises(InferenceAdminError) as err:
        asyncio.run(load())
    assert 400 <= err.value.status_code < 500 and "aion-v999" not in vllm_models(vllm_server)
    assert json.dumps(err.value.message)  # vLLM's own reason, passed on
