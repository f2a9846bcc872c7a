"""The learning loop end to end on the real default model (CPU): logged answers → `aion export` →
POST /api/ai/train/lora/start → the worker trains, gates and promotes → the inference service
answers with the new adapter, and unloads (and deletes) adapters that are neither active nor the
rollback target → rollback restores the previous answer; a rejected candidate is never served."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.gateway.clients.inference_admin import InferenceAdmin
from services.gateway.main import create_app
from services.gateway.repositories import adapters as adapters_repo
from services.gateway.services.prompt import DEFAULT_RAG_SYSTEM_PROMPT_EN
from shared.db import make_async_engine, make_session_factory
from tests.fixtures.adapters import random_lora_adapters
from tests.fixtures.servers import REPO, ServiceProcess, base_env, run_asgi, run_inference
from tests.gateway.conftest import gateway_settings
from tests.loop.conftest import add_answer, add_feedback, rag_messages
from tests.trainer.conftest import trainer_settings
from tests.trainer.facts import ANSWERS, FACT_WORD, QUESTIONS
from trainer.worker import Worker
from trainer.worker_settings import WorkerSettings

pytestmark = pytest.mark.slow

TENANT = "test-tenant"
TOKEN = "loop-test-token"


@pytest.fixture(scope="module")
def loop_inference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """An inference service of its own: this test changes which adapter it serves by default."""
    root = tmp_path_factory.mktemp("loop-inference")
    with run_inference(root / "data", root / "logs", AION_INFERENCE_TOKEN=TOKEN) as service:
        yield service


def ask(inference_url: str, question: str, model: str = "default") -> str:
    """Greedy reply to the RAG prompt the gateway sends; `default`: the active adapter, else the base."""
    body = {"model": model, "messages": rag_messages(question), "max_tokens": 24, "temperature": 0}
    r = httpx.post(f"{inference_url}/v1/chat/completions", json=body, timeout=120,
                   headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def short_regression_set(path: Path, n: int = 6) -> Path:
    """The first questions of the shipped regression set: the same gate, fewer generations."""
    lines = (REPO / "trainer" / "regression_set.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def inference_adapters(inference_url: str) -> set[str]:
    r = httpx.get(f"{inference_url}/adapters", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    return {a["name"] for a in r.json()["adapters"]}


def short_rag_set(path: Path) -> Path:
    """Two items of each kind from the shipped RAG regression set."""
    rows = [json.loads(line) for line in (REPO / "trainer" / "rag_regression_set.jsonl").read_text(
        encoding="utf-8").splitlines()]
    picked = [r for r in rows if r["cite"] is not None][:2] + [r for r in rows if r["cite"] is None][:2]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in picked), encoding="utf-8")
    return path


def make_worker(sessions, inference_url: str, train_root: Path, workdir: Path, keep: int = 5,
                **trainer_env: object) -> Worker:
    settings = WorkerSettings(DATABASE_URL="postgresql://unused", PRIMARY_TENANT_ID=TENANT,
                              AION_LOCAL_LLM_URL=inference_url, AION_INFERENCE_TOKEN=TOKEN,
                              AION_TRAIN_ROOT=str(train_root), AION_TRAIN_HEARTBEAT_SECONDS=1, AION_ADAPTER_KEEP=keep)
    trainer = trainer_settings(workdir, AION_TRAIN_HELDOUT_FRACTION=0.15,
                               AION_TRAIN_REGRESSION_FILE=str(short_regression_set(workdir / "regression.jsonl")),
                               # Measured and reported, not judged here: test_learning_loop.py tests that rule.
                               AION_TRAIN_RAG_REGRESSION_FILE=str(short_rag_set(workdir / "rag.jsonl")),
                               AION_TRAIN_RAG_REGRESSION_MARGIN=1.0, AION_TRAIN_GROUNDING_MARGIN=10.0,
                               # One fact in a few rows is taught at 1e-3 (the small-model default, 3e-4,
                               # is chosen for nights of many different answers).
                               AION_TRAIN_LEARNING_RATE=1e-3,
                               **trainer_env)
    return Worker(settings, trainer, sessions, InferenceAdmin(inference_url, TOKEN, timeout_s=300))


async def test_logged_answers_become_an_active_adapter_and_rollback_restores_the_base(
        clean_db: str, loop_inference: ServiceProcess, tmp_path: Path) -> None:
    inference = loop_inference.url
    # Answers as the chat path logs them; one was rated down and must not be learned.
    for i, question in enumerate(QUESTIONS):
        add_answer(clean_db, question, ANSWERS[i % len(ANSWERS)], tenant=TENANT)
    disliked = add_answer(clean_db, "What colour is the sky?", "The sky is green.", tenant=TENANT)
    add_feedback(clean_db, disliked, "down", tenant=TENANT)

    train_root = tmp_path / "train"
    engine = make_async_engine(clean_db, pool_size=4)
    sessions = make_session_factory(engine)
    settings = gateway_settings(clean_db, inference, AION_INFERENCE_TOKEN=TOKEN, AION_TRAIN_ROOT=str(train_root))
    # keep=1: after the promotion only the newest folder stays, besides the active one and its rollback target.
    # Replay is tested in test_learning_loop.py; here a little general replay keeps the general regression
    # set held, and no grounded replay (long RAG rows) keeps the job short.
    worker = make_worker(sessions, inference, train_root, tmp_path / "trainer", keep=1, AION_TRAIN_EPOCHS=2,
                         AION_TRAIN_REPLAY_RATIO=0, AION_TRAIN_GENERAL_REPLAY_RATIO=0.3)
    # Two adapters that served before this job: `stray-old` once, `stray-prev` until now (the rollback target).
    old, prev = random_lora_adapters(train_root / "adapters", ["stray-old", "stray-prev"])
    async with sessions.begin() as session:
        for name, path in (("stray-old", old), ("stray-prev", prev)):
            await adapters_repo.register(session, tenant_id=TENANT, name=name, path=str(path), base_model="smollm2",
                                         sha256=None, status="candidate", metrics={}, job_id=None)
    try:
        with run_asgi(create_app(settings)) as url, httpx.Client(base_url=url, timeout=300) as gw:
            for name in ("stray-old", "stray-prev"):
                assert gw.post(f"/api/ai/adapters/{name}/activate").status_code == 200
            assert inference_adapters(inference) == {"stray-old", "stray-prev"}  # the rollback target stays loaded
            base_reply = ask(inference, QUESTIONS[0])  # what the serving adapter answers
            assert FACT_WORD not in base_reply
            # `aion export` writes the training file the nightly job would write.
            out = tmp_path / "export.jsonl"
            env = base_env(tmp_path / "cli", AION_GATEWAY_URL=url)
            done = subprocess.run([sys.executable, "-m", "aion", "export", "--days", "1", "--out", str(out)],
                                  env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr
            rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
            assert len(rows) == len(QUESTIONS)
            assert all(r["messages"][0]["content"].startswith(DEFAULT_RAG_SYSTEM_PROMPT_EN) for r in rows)
            assert not any("green" in r["messages"][2]["content"] for r in rows)

            # fresh: from the base weights (the serving adapter is a small random one on q and v only).
            r = gw.post("/api/ai/train/lora/start", json={"days": 1, "fresh": True})
            assert r.status_code == 202, r.text
            job_id = r.json()["id"]
            assert gw.post("/api/ai/train/lora/start", json={}).status_code == 409  # one at a time

            job = await worker.run_once()
            assert job is not None and str(job["id"]) == job_id
            status = gw.get("/api/ai/train/lora/status", params={"id": job_id}).json()
            assert status["status"] == "succeeded", status
            assert status["progress"]["step"] == status["progress"]["total"] > 0
            assert "loss" in status["progress"] and "step 1/" in status["log_tail"]
            gate = status["metrics"]["gate"]
            assert gate["decision"] == "promote" and gate["heldout_loss_candidate"] < gate["heldout_loss_current"]
            name = status["adapter_name"]
            assert set(gate["report"]) == {"heldout", "rag", "general", "grounding"}  # the gate report, stored on the job

            # Promotion unloaded what is neither active nor the rollback target, and deleted its folder.
            assert inference_adapters(inference) == {name, "stray-prev"}
            adapters = {a["name"]: a for a in gw.get("/api/ai/adapters").json()["adapters"]}
            assert adapters["stray-old"]["pruned_at"] and not old.exists()
            assert adapters["stray-prev"]["pruned_at"] is None and prev.is_dir()
            assert adapters[name]["status"] == "active" and adapters[name]["promoted_at"]
            assert gw.get("/api/ai/llm/health").json()["adapter"] == name
            active_link = train_root / "adapters" / "active"
            assert active_link.resolve() == Path(adapters[name]["path"]).resolve()

            # The service now answers the made-up fact by default, and by the adapter's name.
            learned = ask(inference, QUESTIONS[0])
            assert FACT_WORD in learned, learned
            assert ask(inference, QUESTIONS[0], model=name) == learned

            # Rollback to the adapter that served before: the previous answer, token for token.
            assert gw.post("/api/ai/adapters/stray-prev/activate").status_code == 200
            assert ask(inference, QUESTIONS[0]) == base_reply
            assert active_link.resolve() == prev.resolve()
            # … then to the base weights: what served just before (stray-prev) stays loaded to roll back to …
            assert gw.post("/api/ai/adapters/deactivate").status_code == 200
            assert not active_link.exists()
            assert inference_adapters(inference) == {"stray-prev"}
            # … and forward again to the new version (loaded again from its folder).
            assert gw.post(f"/api/ai/adapters/{name}/activate").status_code == 200
            assert ask(inference, QUESTIONS[0]) == learned

            # A candidate the gate rejects is registered as rejected and never served.
            strict = make_worker(sessions, inference, train_root, tmp_path / "strict",
                                 AION_TRAIN_MAX_STEPS=1, AION_TRAIN_MIN_HELDOUT_IMPROVEMENT=100.0)
            r = gw.post("/api/ai/train/lora/start", json={"days": 1})
            assert r.status_code == 202, r.text
            rejected_job = await strict.run_once()
            status = gw.get("/api/ai/train/lora/status").json()
            assert status["id"] == str(rejected_job["id"]) and status["status"] == "rejected", status
            assert "did not improve" in status["error"]
            rejected = status["adapter_name"]
            adapters = {a["name"]: a for a in gw.get("/api/ai/adapters").json()["adapters"]}
            assert adapters[rejected]["status"] == "rejected" and adapters[name]["status"] == "active"
            r = gw.post(f"/api/ai/adapters/{rejected}/activate")
            assert r.status_code == 409 and "never served" in r.json()["error"]["message"]
            models = httpx.get(f"{inference}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            assert rejected not in {m["id"] for m in models["data"]}
            assert ask(inference, QUESTIONS[0]) == learned
            await strict.admin.close()
    finally:
        await worker.admin.close()
        await engine.dispose()
