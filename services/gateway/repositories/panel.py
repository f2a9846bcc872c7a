"""SQL the admin panel needs beyond the public metrics: the scheduler's job store and its recent runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def scheduled_jobs(session: AsyncSession) -> list[dict[str, Any]]:
    """APScheduler's persistent job store: one row per job, `next_run_time` in epoch seconds."""
    rows = (await session.execute(text("SELECT id, next_run_time FROM apscheduler_jobs ORDER BY id"))).all()
    return [{"id": r[0], "next_run_time": float(r[1]) if r[1] is not None else None} for r in rows]


async def recent_scheduler_runs(session: AsyncSession, limit: int = 10) -> list[dict[str, Any]]:
    rows = (await session.execute(text("""
        SELECT job, slot, owner, status, detail, started_at, finished_at FROM scheduler_runs
        ORDER BY started_at DESC LIMIT :n"""), {"n": limit})).mappings().all()
    return [dict(r) for r in rows]


async def database_versions(session: AsyncSession) -> dict[str, Any]:
    row = (await session.execute(text("""
        SELECT current_setting('server_version'), (SELECT extversion FROM pg_extension WHERE extname = 'vector')
    """))).one()
    return {"version": row[0], "pgvector": row[1]}
