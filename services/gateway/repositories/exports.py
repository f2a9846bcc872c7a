"""SQL for the training-data export: answer events in a window, negative feedback, and export runs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass
class AnswerRow:
    request_id: str | None
    created_at: datetime
    value: float | None
    meta: dict[str, Any]


async def answers_between(session: AsyncSession, tenant_id: str, start: datetime, end: datetime) -> list[AnswerRow]:
    rows = (await session.execute(text("""
        SELECT request_id, created_at, value, meta FROM ai_events
        WHERE tenant_id = :t AND kind = 'answer' AND created_at > :s AND created_at <= :e
        ORDER BY created_at, id
    """), {"t": tenant_id, "s": start, "e": end})).all()
    return [AnswerRow(r[0], r[1], r[2], r[3] or {}) for r in rows]


async def negatively_rated(session: AsyncSession, tenant_id: str, request_ids: list[str]) -> set[str]:
    """Answers whose latest feedback is a thumbs-down."""
    if not request_ids:
        return set()
    rows = (await session.execute(text("""
        SELECT DISTINCT ON (meta->>'answer_request_id') meta->>'answer_request_id', value
        FROM ai_events
        WHERE tenant_id = :t AND kind = 'feedback' AND meta->>'answer_request_id' = ANY(:ids)
        ORDER BY meta->>'answer_request_id', created_at DESC, id DESC
    """), {"t": tenant_id, "ids": request_ids})).all()
    return {r[0] for r in rows if (r[1] or 0) < 0}


async def last_watermark(session: AsyncSession, tenant_id: str, trigger: str) -> datetime | None:
    return (await session.execute(text("""
        SELECT max(watermark) FROM export_runs WHERE tenant_id = :t AND trigger = :g AND status = 'succeeded'
    """), {"t": tenant_id, "g": trigger})).scalar_one()


async def record_run(session: AsyncSession, *, tenant_id: str, trigger: str, fmt: str, window_start: datetime,
                     window_end: datetime, watermark: datetime | None, rows: int, skipped: dict[str, int],
                     path: str | None, status: str, error: str | None) -> uuid.UUID:
    run_id = uuid.uuid4()
    await session.execute(text("""
        INSERT INTO export_runs (id, tenant_id, trigger, format, window_start, window_end, watermark, rows,
                                 skipped, path, status, error)
        VALUES (:id, :t, :g, :f, :ws, :we, :wm, :n, CAST(:sk AS jsonb), :p, :st, :err)
    """), {"id": run_id, "t": tenant_id, "g": trigger, "f": fmt, "ws": window_start, "we": window_end,
           "wm": watermark, "n": rows, "sk": json.dumps(skipped), "p": path, "st": status, "err": error})
    return run_id


async def recent_runs(session: AsyncSession, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
    rows = (await session.execute(text("""
        SELECT id, trigger, format, window_start, window_end, watermark, rows, skipped, path, status, error, created_at
        FROM export_runs WHERE tenant_id = :t ORDER BY created_at DESC LIMIT :n
    """), {"t": tenant_id, "n": limit})).mappings().all()
    return [dict(r) for r in rows]
