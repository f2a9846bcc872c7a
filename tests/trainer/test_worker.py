"""The trainer worker's job handling on a real Postgres: one job per worker, dead workers recovered,
a worker SIGKILLed mid-training leaves the active adapter alone."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.gateway.repositories import adapters as adapters_repo
from services.gateway.repositories import jobs as jobs_repo
from tests.fixtures.servers import ServiceProcess, base_env
from tests.loop.conftest import add_answer
from tests.trainer.facts import ANSWERS, QUESTIONS
from trainer.settings import TrainerSettings
from trainer.worker import job_settings

TENANT = "test-tenant"


async def queue_job(sessions: async_sessionmaker[AsyncSession], **params: object) -> uuid.UUID:
    async with sessions.begin() as session:
        return await jobs_repo.create(session, tenant_id=TENANT, params=dict(params), trigger="manual")


async def claim(sessions: async_sessionmaker[AsyncSession], worker: str) -> dict | None:
    async with sessions.begin() as session:
        return await jobs_repo.claim_next(session, worker)


async def test_concurrent_workers_never_take_the_same_job(sessions) -> None:
    job = await queue_job(sessions)
    claims = await asyncio.gather(*(claim(sessions, f"w{i}") for i in range(6)))
    taken = [c for c in claims if c is not None]
    assert len(taken) == 1 and taken[0]["id"] == job and taken[0]["status"] == "running"
    assert taken[0]["attempts"] == 1

    # Two queued jobs, two workers: each gets its own, oldest first.
    first, second = await queue_job(sessions), await queue_job(sessions)
    a, b = await asyncio.gather(claim(sessions, "a"), claim(sessions, "b"))
    assert {a["id"], b["id"]} == {first, second}
    assert await claim(sessions, "c") is None


async def test_an_uncommitted_claim_is_skipped_not_waited_for(sessions) -> None:
    """SKIP LOCKED: a worker holding the row in an open transaction does not block the others."""
    await queue_job(sessions)
    async with sessions.begin() as holding:
        held = await jobs_repo.claim_next(holding, "slow")
        assert held is not None
        assert await asyncio.wait_for(claim(sessions, "other"), timeout=5) is None


async def test_a_dead_worker_is_requeued_once_then_failed(sessions) -> None:
    job = await queue_job(sessions)
    assert (await claim(sessions, "w1"))["attempts"] == 1
    async with sessions.begin() as session:
        # A live worker beats: nothing to recover.
        assert await jobs_repo.recover_stale(session, 60, max_attempts=2) == []
        await session.execute(text("UPDATE training_jobs SET heartbeat_at = now() - interval '1 hour'"))
        assert await jobs_repo.recover_stale(session, 60, max_attempts=2) == [job]
        row = await jobs_repo.get(session, TENANT, job)
    assert row["status"] == "queued" and "re-queued" in row["error"] and row["finished_at"] is None

    again = await claim(sessions, "w2")
    assert again["id"] == job and again["attempts"] == 2 and again["error"] is None
    async with sessions.begin() as session:
        await session.execute(text("UPDATE training_jobs SET heartbeat_at = now() - interval '1 hour'"))
        assert await jobs_repo.recover_stale(session, 60, max_attempts=2) == [job]
        row = await jobs_repo.get(session, TENANT, job)
    assert row["status"] == "failed" and "2 attempts" in row["error"] and row["finished_at"] is not None
    assert "w2 stopped answering" in row["log_tail"]


async def test_a_cancelled_job_is_not_overwritten_by_its_worker(sessions) -> None:
    job = await queue_job(sessions)
    await claim(sessions, "w1")
    async with sessions.begin() as session:
        assert await jobs_repo.cancel(session, TENANT, job) == "cancelled"
        # The worker's next heartbeat tells it, and its late `finish` changes nothing.
        assert await jobs_repo.heartbeat(session, job, progress={"step": 3}) == "cancelled"
        await jobs_repo.finish(session, job, status="succeeded", adapter_name="aion-v9")
        row = await jobs_repo.get(session, TENANT, job)
    assert row["status"] == "cancelled" and row["adapter_name"] is None


def test_job_parameters_override_the_trainer_settings(tmp_path: Path) -> None:
    base = TrainerSettings(AION_DATA_DIR=str(tmp_path))
    tuned = job_settings(base, {"learning_rate": 5e-4, "epochs": 2.6, "max_steps": 7, "days": 3, "fresh": True})
    assert (tuned.learning_rate, tuned.epochs, tuned.max_steps) == (5e-4, 3, 7)
    assert tuned.lora_r == base.lora_r


def _job_row(db: str, job: uuid.UUID) -> dict:
    with psycopg.connect(db) as conn:
        cur = conn.execute("SELECT status, progress, attempts, error, adapter_name FROM training_jobs WHERE id = %s",
                           (job,))
        status, progress, attempts, error, adapter = cur.fetchone()
    return {"status": status, "progress": progress or {}, "attempts": attempts, "error": error, "adapter": adapter}


@pytest.mark.slow
async def test_a_worker_killed_mid_training_leaves_the_active_adapter_and_the_job_is_requeued(
        clean_db: str, sessions, tmp_path: Path) -> None:
    for i, question in enumerate(QUESTIONS):
        add_answer(clean_db, question, ANSWERS[i % len(ANSWERS)], tenant=TENANT)
    train_root = tmp_path / "train"
    # An adapter already serving: the dead job must leave it active and its files untouched.
    serving = train_root / "adapters" / "aion-v1"
    serving.mkdir(parents=True)
    (serving / "adapter_model.safetensors").write_bytes(b"weights")
    async with sessions.begin() as session:
        await adapters_repo.register(session, tenant_id=TENANT, name="aion-v1", path=str(serving),
                                     base_model="smollm2", sha256=None, status="candidate", metrics={}, job_id=None)
        await adapters_repo.make_active(session, TENANT, "aion-v1")
    # A half-written folder from an earlier crash: swept when the worker starts.
    leftover = train_root / "adapters" / ".job-old-a1.partial-x1"
    leftover.mkdir()
    job = await queue_job(sessions, days=1, max_steps=200, fresh=True)

    env = base_env(tmp_path / "data", DATABASE_URL=clean_db, PRIMARY_TENANT_ID=TENANT,
                   AION_TRAIN_ROOT=str(train_root), AION_TRAIN_DEVICE="cpu", AION_TRAIN_THREADS="1",
                   AION_TRAIN_HEARTBEAT_SECONDS="1", AION_LOCAL_LLM_URL="http://127.0.0.1:9")
    worker = ServiceProcess(["trainer", "worker"], env, tmp_path / "worker.log", "")
    worker.start()
    try:
        deadline = time.monotonic() + 300
        while _job_row(clean_db, job)["progress"].get("step", 0) < 1:
            assert worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, f"no training step in 300 s:\n{worker.log_tail()}"
            await asyncio.sleep(0.5)
        assert not leftover.exists()
        worker.stop(signal.SIGKILL)
    finally:
        worker.kill()

    row = _job_row(clean_db, job)
    assert row["status"] == "running" and row["attempts"] == 1  # as the dead worker left it
    await asyncio.sleep(1.2)
    async with sessions.begin() as session:
        assert await jobs_repo.recover_stale(session, 1.0, max_attempts=2) == [job]
        active = await adapters_repo.active(session, TENANT)
        registry = await adapters_repo.list_all(session, TENANT)
    row = _job_row(clean_db, job)
    assert row["status"] == "queued" and row["adapter"] is None
    assert active["name"] == "aion-v1" and [a["name"] for a in registry] == ["aion-v1"]
    assert (serving / "adapter_model.safetensors").read_bytes() == b"weights"
    # Nothing of the dead attempt is an adapter anyone could load.
    assert not any((p / "adapter_model.safetensors").exists()
                   for p in (train_root / "adapters").iterdir() if p.name.startswith("job-"))


@pytest.mark.slow
async def test_a_job_with_too_few_examples_fails_and_says_why(clean_db: str, sessions, tmp_path: Path) -> None:
    from services.gateway.clients.inference_admin import InferenceAdmin
    from tests.trainer.conftest import trainer_settings
    from trainer.worker import Worker
    from trainer.worker_settings import WorkerSettings

    for question, answer in zip(QUESTIONS[:3], ANSWERS, strict=False):
        add_answer(clean_db, question, answer, tenant=TENANT)
    job = await queue_job(sessions, days=1)
    worker = Worker(WorkerSettings(PRIMARY_TENANT_ID=TENANT, AION_TRAIN_ROOT=str(tmp_path / "train")),
                    trainer_settings(tmp_path), sessions, InferenceAdmin("http://127.0.0.1:9", None))
    try:
        done = await worker.run_once()
    finally:
        await worker.admin.close()
    assert done["id"] == job and done["status"] == "failed"
    assert "3 usable examples" in done["error"] and "AION_TRAIN_MIN_EXAMPLES" in done["error"]
    assert not (tmp_path / "train" / "adapters").exists() or not any((tmp_path / "train" / "adapters").iterdir())
