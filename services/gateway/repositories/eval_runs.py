"""SQL for stored evaluation runs (`aion eval`): write one, list the latest."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from shared.db import EvalRun


async def insert_run(session: AsyncSession, *, tenant_id: str, label: str, set_sha256: str, mode: str,
                     questions: int, model: str | None, settings: dict[str, Any], metrics: dict[str, Any],
                     results: list[dict[str, Any]], duration_s: float) -> uuid.UUID:
    run_id = uuid.uuid4()
    await session.execute(insert(EvalRun).values(
        id=run_id, tenant_id=tenant_id, label=label, set_sha256=set_sha256, mode=mode, questions=questions,
        model=model, settings=settings, metrics=metrics, results=results, duration_s=duration_s))
    return run_id


async def latest(session: AsyncSession, tenant_id: str, *, limit: int) -> list[EvalRun]:
    """The newest runs first, without their per-question results (the panel lists figures only)."""
    rows = await session.scalars(select(EvalRun).options(defer(EvalRun.results, raiseload=True))
                                 .where(EvalRun.tenant_id == tenant_id)
                                 .order_by(EvalRun.created_at.desc(), EvalRun.id).limit(limit))
    return list(rows)


async def get(session: AsyncSession, tenant_id: str, run_id: uuid.UUID) -> EvalRun | None:
    return await session.scalar(select(EvalRun).where(EvalRun.tenant_id == tenant_id, EvalRun.id == run_id))
