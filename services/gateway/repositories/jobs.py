"""SQL for training jobs: queue, claim (SKIP LOCKED), progress, finish, and recovery of dead workers."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_COLUMNS = ("id, tenant_id, status, trigger, params, dataset_path, data_until, progress, metrics, log_tail, error, "
            "adapter_name, attempts, worker, heartbeat_at, created_at, started_at, finished_at")


async def create(session: AsyncSession, *, tenant_id: str, params: dict[str, Any], trigger: str,
                 dataset_path: str | None = None, data_until: datetime | None = None) -> uuid.UUID:
    """Queue a job; `data_until`: the end of its dataset's window (what its adapter will have learned)."""
    job_id = uuid.uuid4()
    await session.execute(text("""
        INSERT INTO training_jobs (id, tenant_id, trigger, params, dataset_path, data_until)
        VALUES (:id, :t, :g, CAST(:p AS jsonb), :d, :u)
    """), {"id": job_id, "t": tenant_id, "g": trigger, "p": json.dumps(params), "d": dataset_path,
           "u": data_until})
    return job_id


async def set_dataset(session: AsyncSession, job_id: uuid.UUID, dataset_path: str, data_until: datetime) -> None:
    """A job that exported its own dataset records it, and the end of its window."""
    await session.execute(text("UPDATE training_jobs SET dataset_path = :d, data_until = :u WHERE id = :id"),
                          {"id": job_id, "d": dataset_path, "u": data_until})


async def active_job(session: AsyncSession, tenant_id: str) -> dict[str, Any] | None:
    row = (await session.execute(text(f"""
        SELECT {_COLUMNS} FROM training_jobs WHERE tenant_id = :t AND status IN ('queued', 'running')
        ORDER BY created_at LIMIT 1"""), {"t": tenant_id})).mappings().first()
    return dict(row) if row else None


async def claim_next(session: AsyncSession, worker: str) -> dict[str, Any] | None:
    """Take the oldest queued job; concurrent workers skip rows another one has locked."""
    row = (await session.execute(text(f"""
        UPDATE training_jobs SET status = 'running', worker = :w, attempts = attempts + 1,
               started_at = now(), heartbeat_at = now(), error = NULL
        WHERE id = (SELECT id FROM training_jobs WHERE status = 'queued' ORDER BY created_at
                    FOR UPDATE SKIP LOCKED LIMIT 1)
        RETURNING {_COLUMNS}"""), {"w": worker})).mappings().first()
    return dict(row) if row else None


async def heartbeat(session: AsyncSession, job_id: uuid.UUID, *, progress: dict[str, Any] | None = None,
                    log_line: str | None = None) -> str:
    """Record progress; returns the job's status (so a worker notices a cancellation)."""
    row = (await session.execute(text("""
        UPDATE training_jobs SET heartbeat_at = now(),
               progress = CASE WHEN CAST(:p AS jsonb) IS NULL THEN progress ELSE CAST(:p AS jsonb) END,
               log_tail = CASE WHEN CAST(:l AS text) IS NULL THEN log_tail
                               ELSE right(log_tail || CAST(:l AS text) || E'\n', 4000) END
        WHERE id = :id RETURNING status"""),
        {"id": job_id, "p": json.dumps(progress) if progress is not None else None, "l": log_line})).first()
    return row[0] if row else "missing"


async def finish(session: AsyncSession, job_id: uuid.UUID, *, status: str, metrics: dict[str, Any] | None = None,
                 error: str | None = None, adapter_name: str | None = None) -> None:
    await session.execute(text("""
        UPDATE training_jobs SET status = :s, finished_at = now(), heartbeat_at = now(),
               metrics = COALESCE(CAST(:m AS jsonb), metrics), error = :e,
               adapter_name = COALESCE(:a, adapter_name)
        WHERE id = :id AND status = 'running'
    """), {"id": job_id, "s": status, "m": json.dumps(metrics) if metrics is not None else None, "e": error,
           "a": adapter_name})


async def recover_stale(session: AsyncSession, stale_after_s: float, max_attempts: int) -> list[uuid.UUID]:
    """Running jobs whose worker stopped beating: re-queued once, then failed. Returns the ids touched."""
    rows = (await session.execute(text("""
        UPDATE training_jobs
        SET status = CASE WHEN attempts < :max THEN 'queued' ELSE 'failed' END,
            error = CASE WHEN attempts < :max THEN 'worker died; re-queued'
                         ELSE 'worker died during the job (' || attempts || ' attempts); not retried' END,
            finished_at = CASE WHEN attempts < :max THEN NULL ELSE now() END,
            log_tail = right(log_tail || 'worker ' || coalesce(worker, '?') || ' stopped answering' || E'\n', 4000)
        WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => :age)
        RETURNING id"""), {"max": max_attempts, "age": stale_after_s})).all()
    return [r[0] for r in rows]


async def cancel(session: AsyncSession, tenant_id: str, job_id: uuid.UUID) -> str | None:
    row = (await session.execute(text("""
        UPDATE training_jobs SET status = 'cancelled', finished_at = now()
        WHERE id = :id AND tenant_id = :t AND status IN ('queued', 'running') RETURNING status
    """), {"id": job_id, "t": tenant_id})).first()
    return row[0] if row else None


async def get(session: AsyncSession, tenant_id: str, job_id: uuid.UUID) -> dict[str, Any] | None:
    row = (await session.execute(text(f"SELECT {_COLUMNS} FROM training_jobs WHERE id = :id AND tenant_id = :t"),
                                 {"id": job_id, "t": tenant_id})).mappings().first()
    return dict(row) if row else None


async def latest(session: AsyncSession, tenant_id: str) -> dict[str, Any] | None:
    row = (await session.execute(text(f"""
        SELECT {_COLUMNS} FROM training_jobs WHERE tenant_id = :t ORDER BY created_at DESC LIMIT 1"""),
        {"t": tenant_id})).mappings().first()
    return dict(row) if row else None


async def history(session: AsyncSession, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = (await session.execute(text(f"""
        SELECT {_COLUMNS} FROM training_jobs WHERE tenant_id = :t ORDER BY created_at DESC LIMIT :n"""),
        {"t": tenant_id, "n": limit})).mappings().all()
    return [dict(r) for r in rows]
